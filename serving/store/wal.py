"""The decision log's write-ahead file: each record on local disk before it goes to Redis, kept until the lake has it.

Redis is the decision log's transport, not its durability. The trace writer's thread (never a request) appends each
batch of records here, then sends it to the stream; a segment is deleted only once the drain has written every
record in it to parquet and said so (`serving/store/wal_acks.py`). So a Redis that pauses, slows down, restarts from
an older snapshot or trims the stream loses nothing: the records are still here and are sent again, and the lake
keeps each decision_id once.

One directory per writer (one per service process), `<root>/<writer_id>/`:

- `seg-<first seq>.wal`, segments of lines, each batch appended with one write():
  `R <seq> <crc32> <record JSON>` — seq numbers this writer's records from 1, without gaps;
  `M <last seq> <crc32> <JSON>` — a marker after each batch: {"sent": s, "run_id": r} says the records up to s were
  confirmed by the Redis server whose run_id is r, so a successor does not resend them to that same server.
  The CRC covers the line's kind, seq and payload: a torn tail (a write cut short by a crash) or a damaged line is
  recognised and never sent.
- `counters`: four 64-bit counters in a memory-mapped file (records offered by requests, dropped because the queue
  was full, over the disk budget, or on a write error). A store into a shared mapping is a memory write, not a
  system call, so requests can keep it; it lives in the page cache, so it survives a SIGKILL of the process. At
  adoption, offered − dropped − records in the file = records the dead process accepted but never wrote: the loss
  of a SIGKILL is counted exactly, not guessed.
- `lock`: an flock the owner holds while it lives. The kernel releases it when the process ends, however it ends,
  so a directory whose lock can be taken belongs to a finished process and is adopted by the next writer that
  starts under the same root (its records are replayed under its own writer id and seqs).
- `owner.json`: host, pid and start time of the process that created it, for people.

Durability: segments are fsynced every `sync_interval_s` by the writer (and at rotation and close). A SIGKILL of the
service loses nothing that reached the file (the page cache outlives the process), only records still queued in
memory, which the counters count. A power loss can lose up to `sync_interval_s` of written records.
"""

from __future__ import annotations

import bisect
import errno
import fcntl
import json
import logging
import mmap
import os
import re
import socket
import struct
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger(__name__)

SEGMENT_PREFIX, SEGMENT_SUFFIX = "seg-", ".wal"
RECORD, MARKER = b"R", b"M"
COUNTER_SLOTS = ("offered", "queue_full", "disk_budget", "wal_error")
_COUNTERS_SIZE = 4096


def destination_dir(root: Path, redis_url: str, stream: str) -> Path:
    """The WAL folder of one destination (database number and stream) under `root`.

    Records belong to the stream they were written for: a service pointed at another database (a test's) must not
    replay them there. Not to a host and port, though: the embedded server starts on a free port each time, and a
    Redis moved to another address is where the records left for it should go. (Two services on one host with the
    same home, database and stream but different servers need their own HYPERLIFT_SERVING_DECISION_WAL_DIR.)"""
    db = urlparse(redis_url).path.lstrip("/") or "0"
    return Path(root) / re.sub(r"[^A-Za-z0-9._-]", "_", f"db{db}-{stream}")


def _crc(kind: bytes, seq: int, payload: bytes) -> int:
    """CRC-32 of the payload, seeded with the kind and seq: one pass over the bytes, and a damaged seq or kind fails
    the check as a damaged payload does."""
    return zlib.crc32(payload, (seq * 2 + (kind == MARKER)) & 0xFFFFFFFF)


def _head(kind: bytes, seq: int, payload: bytes) -> bytes:
    return b"%s %d %08x " % (kind, seq, _crc(kind, seq, payload))


def _line(kind: bytes, seq: int, payload: bytes) -> bytes:
    return _head(kind, seq, payload) + payload + b"\n"


@dataclass(frozen=True)
class Entry:
    """One valid line of a segment."""

    kind: bytes
    seq: int
    payload: bytes
    end: int  # byte offset just past the line


def parse(buffer: bytes, start: int = 0) -> Iterator[Entry | int]:
    """The valid lines of `buffer` from `start`; the offset of a damaged line (bad CRC, malformed) is yielded as an
    int and skipped. A last line without its newline is a torn write: it ends the iteration."""
    pos = start
    while True:
        end = buffer.find(b"\n", pos)
        if end < 0:
            return
        line = buffer[pos:end]
        parts = line.split(b" ", 3)
        try:
            kind, seq, crc, payload = parts[0], int(parts[1]), int(parts[2], 16), parts[3]
            valid = kind in (RECORD, MARKER) and _crc(kind, seq, payload) == crc
        except (IndexError, ValueError):
            valid = False
        yield Entry(kind, seq, payload, end + 1) if valid else pos
        pos = end + 1


class WalCounters:
    """The writer's durable counters (see the module docstring); `add` is what a request pays: one struct store."""

    def __init__(self, path: Path, create: bool):
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
        try:
            if create or os.fstat(fd).st_size < _COUNTERS_SIZE:  # (a process killed while creating it: zeros)
                os.ftruncate(fd, _COUNTERS_SIZE)
            self._map = mmap.mmap(fd, _COUNTERS_SIZE)
        finally:
            os.close(fd)
        self.values = list(struct.unpack_from(f"<{len(COUNTER_SLOTS)}Q", self._map))

    def add(self, slot: int, n: int = 1) -> None:
        """Add n to one counter (callers serialise: the trace writer holds its append lock)."""
        self.values[slot] += n
        if not self._map.closed:  # after close (a straggler at shutdown): counted in memory, never an exception
            struct.pack_into("<Q", self._map, slot * 8, self.values[slot])

    def get(self, name: str) -> int:
        """The counter called `name` (one of COUNTER_SLOTS)."""
        return self.values[COUNTER_SLOTS.index(name)]

    def sync(self) -> None:
        """msync: the counters on disk as of now (the page cache already outlives a killed process)."""
        if not self._map.closed:
            self._map.flush()

    def close(self) -> None:
        """Unmap (after a last sync)."""
        if not self._map.closed:
            self._map.flush()
            self._map.close()


class WalError(OSError):
    """The WAL folder cannot be used; the message says which folder and what to change."""


class WriterLog:
    """One writer's directory: append batches (the owner), read records back in order, release acknowledged segments.

    `acked` (everything up to it is in the lake, says the drain), `sent` (everything up to it was confirmed by the
    current Redis server), `lost` (ranges of seqs found damaged on disk) and `released` (ranges deleted before the
    lake confirmed them, to stay within the disk budget) are kept here and advanced by the trace
    writer; only its thread touches a log.
    """

    def __init__(self, path: Path, lock_fd: int, counters: WalCounters, segment_bytes: int, owned: bool):
        self.path = path
        self.writer_id = path.name
        self.owned = owned  # False: adopted from a finished process; nothing is appended to it any more
        self.segment_bytes = segment_bytes
        self.counters = counters
        self._lock_fd: int | None = lock_fd
        self._fd: int | None = None  # the active segment (owner only)
        self.firsts: list[int] = []  # first seq of each segment, ascending
        self.sizes: dict[int, int] = {}
        self._bytes = 0  # sum of sizes, kept as one int: other threads (metrics) read it while this one writes
        self.last = 0  # seq of the newest record written
        self.acked = 0
        self.sent = 0
        self.marker: dict = {}
        self.lost: list[tuple[int, int]] = []
        self.released: list[tuple[int, int]] = []
        self.resent_gen = 0  # the drain generation whose gap report was last answered by a resend
        self._cursor: tuple[int, int, int] | None = None  # (segment first seq, byte offset, next seq) for read()
        self._dirty = False

    # -- opening -----------------------------------------------------------------------------------------------------

    @classmethod
    def create(cls, root: Path, segment_bytes: int) -> WriterLog:
        """A new writer directory under `root`, locked by this process."""
        root = Path(root)
        try:
            root.mkdir(parents=True, exist_ok=True)
            path = root / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            path.mkdir()
            lock_fd = os.open(path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            (path / "owner.json").write_text(json.dumps(
                {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
            ))
            counters = WalCounters(path / "counters", create=True)
            _fsync_dir(path)
            _fsync_dir(root)
        except OSError as exc:
            raise WalError(
                exc.errno, f"cannot create the decision log's write-ahead folder under {root} ({exc.strerror}); "
                "set HYPERLIFT_SERVING_DECISION_WAL_DIR to a writable local folder"
            ) from exc
        return cls(path, lock_fd, counters, segment_bytes, owned=True)

    @classmethod
    def adopt(cls, path: Path, segment_bytes: int) -> WriterLog | None:
        """Take over the directory of a finished writer; None while its process still holds the lock (or when
        another starting process adopted it first)."""
        try:
            lock_fd = os.open(path / "lock", os.O_RDWR)
        except FileNotFoundError:  # removed by whoever adopted it before us, or not a writer directory
            return None
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            return None
        if not (path / "counters").exists():  # emptied by a previous adopter that finished with it
            os.close(lock_fd)
            return None
        wal = cls(path, lock_fd, WalCounters(path / "counters", create=False), segment_bytes, owned=False)
        wal._scan()
        return wal

    def _scan(self) -> None:
        """Segments, the newest record's seq and the newest marker, from the last segment(s) only: adoption costs
        one segment's read, not the whole backlog's."""
        for segment in self.path.glob(f"{SEGMENT_PREFIX}*{SEGMENT_SUFFIX}"):
            first = int(segment.name[len(SEGMENT_PREFIX):-len(SEGMENT_SUFFIX)])
            self.firsts.append(first)
            self.sizes[first] = segment.stat().st_size
        self.firsts.sort()
        self._bytes = sum(self.sizes.values())
        for first in reversed(self.firsts):
            data = self._segment(first).read_bytes()
            valid, marker = 0, None
            for entry in parse(data):
                if isinstance(entry, Entry):
                    valid = entry.end
                    if entry.kind == RECORD:
                        self.last = max(self.last, entry.seq)
                    else:
                        marker = json.loads(entry.payload)  # the newest one wins
            if valid < len(data):
                log.warning("%s: %d bytes after the last valid line (a write cut short by a crash) ignored",
                            self._segment(first), len(data) - valid)
            self.last = max(self.last, first - 1)
            if marker is not None:
                self.marker = marker
                break
        for first in reversed(self.firsts):  # a newer segment may hold no marker yet; the newest record is global
            if first - 1 > self.last:
                self.last = first - 1

    # -- the owner's side --------------------------------------------------------------------------------------------

    def append(self, payloads: list[bytes], marker: dict) -> int:
        """Append records (seq last+1 …) and a marker in one write; returns the first seq. Raises OSError (the
        segment is cut back to its previous length, so a failed write leaves no damaged line behind)."""
        first = self.last + 1
        parts: list[bytes] = []
        for seq, payload in enumerate(payloads, first):
            parts += (_head(RECORD, seq, payload), payload, b"\n")
        parts.append(_line(MARKER, first + len(payloads) - 1, json.dumps(marker).encode()))
        data = b"".join(parts)  # one copy of the batch, one write
        active = self.firsts[-1] if self.firsts else None
        full = active is not None and self.sizes[active] and self.sizes[active] + len(data) > self.segment_bytes
        if self._fd is None or active is None or full:  # (no fd: the first batch, or a rotation that failed)
            active = self._rotate(first)
        size, fd = self.sizes[active], self._fd
        assert fd is not None  # _rotate opened it
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
        except OSError:
            os.ftruncate(fd, size)
            raise
        self.sizes[active] = size + len(data)
        self._bytes += len(data)
        self.last = first + len(payloads) - 1
        self._dirty = True
        return first

    def write_marker(self, marker: dict) -> None:
        """A marker alone (at close: what was sent last)."""
        if self._fd is None:
            return
        data = _line(MARKER, self.last, json.dumps(marker).encode())
        os.write(self._fd, data)
        self.sizes[self.firsts[-1]] += len(data)
        self._bytes += len(data)
        self._dirty = True

    def _rotate(self, first: int) -> int:
        """Close the active segment (fsynced) and open `seg-<first>`; returns `first`."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.fsync(fd)  # a closed segment is durable as a whole
            finally:
                os.close(fd)
        self._fd = os.open(self._segment(first), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        _fsync_dir(self.path)  # the new name survives a power cut
        if not self.firsts or self.firsts[-1] != first:  # (a failed rotation may have created it already)
            self.firsts.append(first)
            self.sizes[first] = 0
        return first

    def sync(self) -> None:
        """fsync the active segment and the counters if anything was written since the last sync."""
        if self._dirty and self._fd is not None:
            os.fsync(self._fd)
        self.counters.sync()
        self._dirty = False

    # -- reading back ------------------------------------------------------------------------------------------------

    def read(self, after: int, max_records: int, max_bytes: int) -> list[tuple[int, bytes]]:
        """Records with seq > `after`, in order, up to the limits. Seqs found missing or damaged on the way are
        added to `lost` (and logged): they cannot be sent, and `floor()` lets the drain step over them."""
        out: list[tuple[int, bytes]] = []
        size = 0
        expected = after + 1
        while expected <= self.last and len(out) < max_records and size < max_bytes:
            index = bisect.bisect_right(self.firsts, expected) - 1
            if index < 0:  # before the oldest segment: released, hence acknowledged
                expected = self.firsts[0] if self.firsts else self.last + 1
                continue
            first = self.firsts[index]
            start = 0
            if self._cursor is not None and self._cursor[0] == first and self._cursor[2] <= expected:
                start = self._cursor[1]
            with open(self._segment(first), "rb") as handle:  # from the cursor on: a replay reads each byte once
                handle.seek(start)
                data = handle.read()
            end_of_segment = self.firsts[index + 1] - 1 if index + 1 < len(self.firsts) else self.last
            for entry in parse(data):
                if isinstance(entry, int):
                    log.error("%s: damaged line at byte %d skipped", self._segment(first), start + entry)
                    continue
                if entry.kind != RECORD or entry.seq < expected:
                    continue
                if entry.seq > expected:
                    self._lose(expected, entry.seq - 1)
                out.append((entry.seq, entry.payload))
                size += len(entry.payload)
                expected = entry.seq + 1
                self._cursor = (first, start + entry.end, expected)
                if len(out) >= max_records or size >= max_bytes:
                    return out
            if expected <= end_of_segment:  # the segment ended early: the rest of its seqs are gone
                self._lose(expected, end_of_segment)
                expected = end_of_segment + 1
        return out

    def _lose(self, lo: int, hi: int) -> None:
        if any(a <= lo and hi <= b for a, b in self.lost):
            return
        self.lost.append((lo, hi))
        log.error("%s: records %d..%d are damaged or missing on disk and cannot be sent", self.path, lo, hi)

    def floor(self) -> int:
        """The highest seq up to which nothing needs the drain any more: `acked`, extended over damaged or released
        ranges that follow it (this writer can do nothing more for those). Sent with every record, it also restores
        a drain state that was lost."""
        floor = self.acked
        for lo, hi in sorted(self.lost + self.released):
            if lo <= floor + 1:
                floor = max(floor, hi)
        return floor

    def released_count(self) -> int:
        """Records deleted from disk (over the budget) before the lake confirmed them."""
        return sum(hi - lo + 1 for lo, hi in self.released)

    def lost_count(self) -> int:
        """Seqs found damaged or missing on disk."""
        return sum(hi - lo + 1 for lo, hi in self.lost)

    # -- releasing ---------------------------------------------------------------------------------------------------

    def release(self) -> int:
        """Delete segments whose records are all at or below `floor()` (never the owner's active one); returns the
        number of records released."""
        floor, released = self.floor(), 0
        while self.firsts:
            first = self.firsts[0]
            end = self.firsts[1] - 1 if len(self.firsts) > 1 else self.last
            if end > floor or (self.owned and len(self.firsts) == 1):
                break
            self._segment(first).unlink(missing_ok=True)
            self.firsts.pop(0)
            self._bytes -= self.sizes.pop(first)
            released += end - first + 1
            if self._cursor is not None and self._cursor[0] == first:
                self._cursor = None
        return released

    def release_confirmed(self, needed: int) -> int:
        """Delete the oldest segments whose records the current Redis server has confirmed (never the owner's
        active one) until `needed` bytes are freed; returns the records released before the lake confirmed them.
        For those the log falls back on Redis's durability: the disk budget's degraded mode, counted by the caller."""
        freed = released = 0
        while self.firsts and freed < needed:
            first = self.firsts[0]
            end = self.firsts[1] - 1 if len(self.firsts) > 1 else self.last
            if end > max(self.sent, self.floor()) or (self.owned and len(self.firsts) == 1):
                break
            floor = self.floor()
            if end > floor:
                self.released.append((max(first, floor + 1), end))
                released += end - max(first, floor + 1) + 1
            self._segment(first).unlink(missing_ok=True)
            self.firsts.pop(0)
            size = self.sizes.pop(first)
            self._bytes -= size
            freed += size
            if self._cursor is not None and self._cursor[0] == first:
                self._cursor = None
        return released

    @property
    def pending_bytes(self) -> int:
        """Bytes of segments on disk."""
        return self._bytes

    @property
    def pending_records(self) -> int:
        """Records on disk the drain has not confirmed."""
        return max(0, self.last - self.floor())

    @property
    def unsent(self) -> int:
        """Records not yet confirmed by the current Redis server."""
        return max(0, self.last - max(self.sent, self.floor()))

    def done(self) -> bool:
        """Every record is in the lake (or known lost)."""
        return self.floor() >= self.last

    def unwritten_at_exit(self) -> int:
        """Records the process offered to its log but never wrote (it died with them queued); adopted logs only."""
        c = self.counters
        return max(0, c.get("offered") - c.get("queue_full") - c.get("disk_budget") - c.get("wal_error") - self.last)

    def _segment(self, first: int) -> Path:
        return self.path / f"{SEGMENT_PREFIX}{first:020d}{SEGMENT_SUFFIX}"

    # -- closing -----------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Sync, close files and release the lock (the directory stays for the next process)."""
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None
        self.counters.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def remove(self) -> None:
        """Delete the directory (every record is in the lake), then release the lock."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.counters.close()
        for child in self.path.iterdir():
            if child.name != "lock":
                child.unlink(missing_ok=True)
        (self.path / "lock").unlink(missing_ok=True)  # another adopter waiting on it finds no counters and skips it
        try:
            self.path.rmdir()
        except OSError as exc:  # a file someone put there: leave the folder, it holds no records
            log.warning("could not remove %s: %s", self.path, exc)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def leftovers(root: Path, segment_bytes: int) -> list[WriterLog]:
    """Adopt every writer directory under `root` whose process has ended (oldest first)."""
    root = Path(root)
    if not root.is_dir():
        return []
    adopted = []
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        wal = WriterLog.adopt(path, segment_bytes)
        if wal is not None:
            adopted.append(wal)
    return adopted


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
