"""The home's one redis-server: started by its first user, reused by the others, stopped by the last to leave."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from infra.home_redis import SERVER_FILE, HomeRedis, process_alive

REPO = Path(__file__).resolve().parents[2]


def down(url: str) -> bool:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.2, retry=None).ping()
    except redis.exceptions.ConnectionError:
        return True
    return False


def test_users_share_one_server_and_the_last_to_leave_stops_it(tmp_path):
    first = HomeRedis(tmp_path).__enter__()
    second = HomeRedis(tmp_path).__enter__()
    assert (first.reused, second.reused) == (False, True)
    assert second.url == first.url and second.server.pid == first.server.pid
    redis.Redis.from_url(first.url).set("k", "from the first user")
    assert redis.Redis.from_url(second.url).get("k") == b"from the first user"
    assert first.users() == [os.getpid(), os.getpid()]

    first.leave()
    assert not down(second.url), "the server stopped while another user still had it"
    second.leave()
    assert down(second.url)
    assert not (tmp_path / SERVER_FILE).exists()
    assert not process_alive(second.server.pid)

    with HomeRedis(tmp_path) as again:  # persistent: the next start reloads what the last one saved
        assert not again.reused
        assert redis.Redis.from_url(again.url).get("k") == b"from the first user"


def launch(home: Path, seconds: float) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["HYPERLIFT_HOME"] = str(home)
    script = f"import os, time; print(os.environ['REDIS_URL'], flush=True); time.sleep({seconds})"
    return subprocess.Popen([sys.executable, "-m", "infra.launch", "--", sys.executable, "-c", script], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_launched_commands_on_one_home_write_to_the_same_redis(tmp_path):
    """`make serve` and `make dagster` side by side: one server, which outlives the first to stop."""
    serve = launch(tmp_path, 60)
    url = serve.stdout.readline().strip()
    dagster = launch(tmp_path, 60)
    try:
        assert dagster.stdout.readline().strip() == url
        serve.send_signal(signal.SIGTERM)
        _, serve_err = serve.communicate(timeout=30)
        assert "started here" in serve_err
        assert not down(url), "stopping one command stopped the redis-server the other one uses"
    finally:
        dagster.send_signal(signal.SIGTERM)
        _, dagster_err = dagster.communicate(timeout=30)
    assert "reused, started by pid" in dagster_err
    assert down(url)


def test_a_user_killed_without_leaving_does_not_keep_the_server_forever(tmp_path):
    script = ("import sys, time; from infra.home_redis import HomeRedis; h = HomeRedis(sys.argv[1]).__enter__(); "
              "print(h.url, flush=True); time.sleep(60)")
    killed = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True)
    url = killed.stdout.readline().strip()
    killed.kill()
    killed.wait(timeout=10)
    assert not down(url), "the server is detached: it survives its starter's SIGKILL"

    with HomeRedis(tmp_path) as later:
        assert later.reused and later.url == url
        assert later.users() == [os.getpid()]  # the dead user's file is pruned
    assert down(url)


def test_a_stale_record_of_a_dead_server_starts_a_new_one(tmp_path):
    with HomeRedis(tmp_path) as first:
        record = json.loads((tmp_path / SERVER_FILE).read_text())
        os.kill(first.server.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while process_alive(first.server.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        with HomeRedis(tmp_path) as second:
            assert not second.reused
            assert second.server.pid != record["pid"]
            assert redis.Redis.from_url(second.url).ping()
        assert not down(second.url), "the first user is still in: the new server stays"
    assert down(second.url)


@pytest.mark.parametrize("content", ["not json", '{"port": 1}', ""])
def test_an_unreadable_record_is_replaced(tmp_path, content):
    (tmp_path / SERVER_FILE).write_text(content)
    with HomeRedis(tmp_path) as home:
        assert not home.reused
        assert json.loads((tmp_path / SERVER_FILE).read_text())["pid"] == home.server.pid
