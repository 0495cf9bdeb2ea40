"""Run a command with the project's environment, starting the embedded Redis first when REDIS_URL is unset.

Usage: python -m infra.launch -- COMMAND [ARGS...]
Example: python -m infra.launch -- feast -c feature_repo apply
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from infra.home_redis import HomeRedis
from infra.profile import LOCAL_DAGSTER_YAML, PROJECT_DAGSTER_YAMLS, dagster_yaml
from infra.redis_server import EmbeddedRedis
from infra.settings import HyperliftSettings, masked_url

log = logging.getLogger(__name__)

DAGSTER_YAML = LOCAL_DAGSTER_YAML  # the local profile's; infra.profile.dagster_yaml picks per profile


def ensure_dagster_home(path: Path, config_text: str = DAGSTER_YAML) -> None:
    """Create DAGSTER_HOME with a dagster.yaml, so runs persist and show in the UI. A file the user wrote or edited is
    kept; one infra.launch wrote unchanged is replaced (switching HYPERLIFT_PROFILE switches Dagster's storage)."""
    path.mkdir(parents=True, exist_ok=True)
    config = path / "dagster.yaml"
    existing = config.read_text() if config.exists() else None
    if existing is None or existing in PROJECT_DAGSTER_YAMLS:
        config.write_text(config_text)


@contextlib.contextmanager
def project_environment(
    settings: HyperliftSettings | None = None, persist: bool = True, announce: Callable[[str], None] = log.info,
) -> Iterator[dict[str, str]]:
    """Yield the environment for child processes. Without REDIS_URL, uses the home's shared embedded redis-server
    for the duration (starting it, or stopping it as its last user: infra.home_redis); `announce` is told which."""
    settings = settings or HyperliftSettings()
    ensure_dagster_home(settings.resolved_dagster_home, dagster_yaml(settings))
    if settings.redis_url:
        yield settings.environment(settings.redis_url)
        return
    if not persist:  # a throw-away server of this process alone
        with EmbeddedRedis(settings.redis_dir, persist=False) as server:
            yield settings.environment(server.url)
        return
    with HomeRedis(settings.redis_dir) as shared:  # the home's one server, shared with its other users
        announce(f"REDIS_URL={shared.url}: {shared.describe()}")
        yield settings.environment(shared.url)


def main(argv: list[str]) -> int:
    """Entry point: run argv (after `--`) inside the project environment and return its exit code."""
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    with project_environment(announce=lambda line: print(f"[hyperlift] {line}", file=sys.stderr)) as env:
        print(f"[hyperlift] REDIS_URL={masked_url(env['REDIS_URL'])} HYPERLIFT_HOME={env['HYPERLIFT_HOME']}",
              file=sys.stderr)
        # The child starts with SIGINT and SIGTERM deliverable and at their default action, whatever this process
        # inherited (a parent that blocked or ignored them, e.g. a test runner after a library's spawn): both the
        # mask and ignored dispositions survive exec, and a blocked SIGTERM would never stop the child or reach us.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        child = subprocess.Popen(argv, env={**os.environ, **env})
        # Ctrl-C reaches the child from the terminal; a SIGTERM sent to us is passed on. Either way we wait for the
        # child, then leave the context, which stops the home's redis-server unless another process still uses it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda signum, _frame: child.send_signal(signum))
        code = child.wait()
        # A child ended by a signal reports -N; a shell says 128 + N (SIGTERM: 143), and SystemExit(-15) would be 241.
        return 128 - code if code < 0 else code

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
