import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parents[2]


def launch(tmp_path: Path, *command: str, **kwargs) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["HYPERLIFT_HOME"] = str(tmp_path)
    return subprocess.Popen([sys.executable, "-m", "infra.launch", "--", *command], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, text=True, **kwargs)


def test_child_sees_the_project_environment_and_its_exit_code(tmp_path):
    script = "import os, sys; print(os.environ['REDIS_URL'], os.environ['HYPERLIFT_FEAST_REDIS']); sys.exit(3)"
    process = launch(tmp_path, sys.executable, "-c", script)
    out, _ = process.communicate(timeout=60)
    url, feast = out.split()
    assert process.returncode == 3
    assert url.startswith("redis://127.0.0.1:") and feast.startswith("127.0.0.1:")
    assert (tmp_path / "dagster" / "dagster.yaml").read_text().count("enabled: false") == 1
    try:  # the embedded server is gone once the child has exited
        redis.Redis.from_url(url, socket_connect_timeout=0.2).ping()
        raise AssertionError("embedded redis-server outlived the launcher")
    except redis.exceptions.ConnectionError:
        pass


def test_sigterm_stops_the_child_and_the_embedded_server(tmp_path):
    script = "import os, time; print(os.environ['REDIS_URL'], flush=True); time.sleep(60)"
    process = launch(tmp_path, sys.executable, "-c", script)
    url = process.stdout.readline().strip()
    assert redis.Redis.from_url(url).ping()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=20)
    time.sleep(0.2)
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.2).ping()
        raise AssertionError("embedded redis-server outlived the launcher")
    except redis.exceptions.ConnectionError:
        pass


def test_a_child_ended_by_a_signal_exits_as_a_shell_reports_it(tmp_path):
    script = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    process = launch(tmp_path, sys.executable, "-c", script)
    assert process.wait(timeout=20) == 128 + signal.SIGTERM


def test_the_launcher_prints_redis_url_without_its_password(tmp_path):
    env = {**os.environ, "HYPERLIFT_HOME": str(tmp_path), "REDIS_URL": "redis://:hunter2@127.0.0.1:1/0"}
    done = subprocess.run([sys.executable, "-m", "infra.launch", "--", sys.executable, "-c", "pass"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "REDIS_URL=redis://:***@127.0.0.1:1/0" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout


def _blocked_and_ignored() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def test_sigterm_works_even_when_the_launcher_inherited_it_blocked_and_ignored(tmp_path):
    """A parent that blocked and ignored SIGTERM (both survive exec; a test runner after some library's spawn was
    one): the launcher still passes SIGTERM on, and its child still dies of its own."""
    ended = launch(tmp_path, sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)",
                   preexec_fn=_blocked_and_ignored)
    assert ended.wait(timeout=20) == 128 + signal.SIGTERM
    script = "import os, time; print(os.environ['REDIS_URL'], flush=True); time.sleep(60)"
    process = launch(tmp_path, sys.executable, "-c", script, preexec_fn=_blocked_and_ignored)
    assert process.stdout.readline().strip().startswith("redis://")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 128 + signal.SIGTERM
