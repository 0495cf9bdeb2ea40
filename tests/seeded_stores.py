"""A home folder and its Redis database as one seeding left them, put back before each test that changes them: an
expensive seeding runs once per module, and every test still starts from the same stores."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import redis


@dataclass(frozen=True)
class SeededStores:
    """The home's files copied aside and every key of the Redis database dumped (value and time to live). The
    home keeps its path, and the database its URL: the stores record absolute paths, and the write-ahead folder is
    named after the URL."""

    home: Path
    copy: Path
    redis_url: str
    keys: dict[bytes, tuple[bytes, int]]

    @classmethod
    def take(cls, home: Path, redis_url: str, copy: Path) -> SeededStores:
        """Snapshot `home` into `copy` and dump the database's keys."""
        client = redis.Redis.from_url(redis_url)
        keys = {key: (client.dump(key), max(client.pttl(key), 0)) for key in client.scan_iter()}
        client.close()
        shutil.copytree(home, copy, symlinks=True)
        return cls(home, copy, redis_url, keys)

    def restore(self) -> None:
        """Put the home's files and the database's keys back as they were taken (anything added since is gone)."""
        if self.home.exists():
            shutil.rmtree(self.home)
        shutil.copytree(self.copy, self.home, symlinks=True)
        client = redis.Redis.from_url(self.redis_url)
        client.flushdb()
        for key, (dumped, ttl) in self.keys.items():
            client.restore(key, ttl, dumped)
        client.close()
