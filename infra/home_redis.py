"""The home's one embedded redis-server, shared by every process that works on the home.

`make serve`, `make dagster`, `make demo`, `make loop` and the benches run inside `infra.launch.project_environment`.
Each used to start its own redis-server on the same folder, so two of them side by side wrote to two diverging copies
(the Dagster drain drained a Redis the service was not writing to). Now the first user of a home starts the server,
detached so it can outlive its starter, and records it in `<home>/redis/server.json`; later users find it there and
reuse it. Every user registers a file under `<home>/redis/users/`; the last one to leave stops the server (which
saves its append-only file and dump first). A lock file serialises these steps between processes. A user that died
without leaving (SIGKILL) is noticed by its pid and no longer counts; a server left running with no user is reused by
the next one, which stops it when it leaves. To share one Redis between homes or machines set `REDIS_URL`: then
nothing is started here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

import redis

from infra.file_lock import file_lock
from infra.redis_server import EmbeddedRedis

log = logging.getLogger(__name__)

SERVER_FILE = "server.json"
LOCK_FILE = "server.lock"
USERS_DIR = "users"


@dataclass(frozen=True)
class RunningServer:
    """What `server.json` records about the home's redis-server."""

    port: int
    pid: int
    run_id: str
    started_by: int
    started_at: str

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def process_alive(pid: int) -> bool:
    """Whether `pid` is a running process (a zombie, exited but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def answers(server: RunningServer) -> bool:
    """Whether the recorded server is the one answering on its port (same process and run id, dataset loaded)."""
    client = redis.Redis(host="127.0.0.1", port=server.port, socket_connect_timeout=0.5, socket_timeout=2.0,
                         retry=None)
    try:
        info = client.info("server")
        if info.get("process_id") != server.pid or info.get("run_id") != server.run_id:
            return False
        return not int(client.info("persistence").get("loading", 0))
    except redis.exceptions.RedisError:
        return False
    finally:
        client.close()


class HomeRedis:
    """Use the home's shared redis-server for the duration of a `with` block (start it if none runs; stop it when
    this is the last user to leave)."""

    def __init__(self, workdir: Path, start_timeout_s: float = 120.0, stop_timeout_s: float = 60.0):
        self.workdir = Path(workdir)
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.server: RunningServer | None = None
        self.reused = False
        self._own: EmbeddedRedis | None = None  # the process object, when this user started the server
        self._user_file: Path | None = None

    @property
    def url(self) -> str:
        if self.server is None:
            raise RuntimeError("HomeRedis is not in use; enter its `with` block first")
        return self.server.url

    # -- entering and leaving ----------------------------------------------------------------------------------------

    def __enter__(self) -> "HomeRedis":
        self.workdir.mkdir(parents=True, exist_ok=True)
        with file_lock(self.workdir / LOCK_FILE):
            server = self.running()
            self.reused = server is not None
            if server is None:
                server = self._start()
            self.server = server
            users = self.workdir / USERS_DIR
            users.mkdir(exist_ok=True)
            self._user_file = users / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
            self._user_file.write_text(json.dumps({"pid": os.getpid(), "argv": sys.argv[:4]}))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.leave()

    def leave(self) -> None:
        """Unregister; stop the server when no other live user remains."""
        if self._user_file is None:
            return
        with file_lock(self.workdir / LOCK_FILE):
            self._user_file.unlink(missing_ok=True)
            self._user_file = None
            if self.users():
                return
            server = self.running()
            if server is not None:
                self._stop(server)
            (self.workdir / SERVER_FILE).unlink(missing_ok=True)

    # -- what is running ---------------------------------------------------------------------------------------------

    def running(self) -> RunningServer | None:
        """The recorded server, if it is still the one answering on its port."""
        path = self.workdir / SERVER_FILE
        try:
            server = RunningServer(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        return server if answers(server) else None

    def users(self) -> list[int]:
        """Pids of the live users of the server (files of users that died without leaving are removed)."""
        pids = []
        for path in sorted((self.workdir / USERS_DIR).glob("*.json")):
            try:
                pid = int(json.loads(path.read_text())["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                pid = -1
            if pid > 0 and process_alive(pid):
                pids.append(pid)
            else:
                path.unlink(missing_ok=True)
        return pids

    # -- starting and stopping ---------------------------------------------------------------------------------------

    def _start(self) -> RunningServer:
        self._own = EmbeddedRedis(self.workdir, persist=True, detached=True, start_timeout_s=self.start_timeout_s)
        self._own.start()
        client = redis.Redis(host="127.0.0.1", port=self._own.port)
        run_id = client.info("server")["run_id"]
        client.close()
        server = RunningServer(port=int(self._own.port), pid=self._own.pid, run_id=run_id, started_by=os.getpid(),
                               started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        tmp = self.workdir / f"{SERVER_FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(asdict(server)))
        os.replace(tmp, self.workdir / SERVER_FILE)
        return server

    def _stop(self, server: RunningServer) -> None:
        """SHUTDOWN (it saves first) and wait for the process to end; SIGTERM, then SIGKILL, if it does not."""
        client = redis.Redis(host="127.0.0.1", port=server.port, socket_connect_timeout=1.0, retry=None)
        try:
            client.shutdown()
        except redis.exceptions.RedisError as error:
            log.warning("redis-server %s (pid %d) refused SHUTDOWN (%s); sending SIGTERM", server.url, server.pid,
                        error)
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.pid, signal.SIGTERM)
        finally:
            client.close()
        deadline = time.monotonic() + self.stop_timeout_s
        while process_alive(server.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if process_alive(server.pid):
            log.warning("redis-server pid %d still running %.0f s after SHUTDOWN; killing it", server.pid,
                        self.stop_timeout_s)
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.pid, signal.SIGKILL)
        if self._own is not None and self._own.pid == server.pid:
            self._own.stop()  # our own child: reap it
            self._own = None

    def describe(self) -> str:
        """One line for the launcher: whose server this is and who else uses it."""
        if self.server is None:
            return "not in use"
        others = [pid for pid in self.users() if pid != os.getpid()]
        origin = f"reused, started by pid {self.server.started_by}" if self.reused else "started here"
        return (f"the home's redis-server (pid {self.server.pid}, {origin}; {len(others)} other user(s) of "
                f"{self.workdir})")
