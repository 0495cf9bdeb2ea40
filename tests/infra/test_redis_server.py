import time

import redis

from infra.redis_server import AOF_FILE, EmbeddedRedis


def test_starts_a_real_server_and_stops_it(tmp_path):
    server = EmbeddedRedis(tmp_path / "r")
    url = server.start()
    client = redis.Redis.from_url(url)
    assert client.ping() is True
    assert client.info("server")["redis_version"].startswith("6.")
    server.stop()
    try:
        client.ping()
        raise AssertionError("server still answers after stop()")
    except redis.exceptions.ConnectionError:
        pass


def test_persistent_server_keeps_data_between_starts(tmp_path):
    with EmbeddedRedis(tmp_path / "r", persist=True) as first:
        redis.Redis.from_url(first.url).set("k", "v")
    with EmbeddedRedis(tmp_path / "r", persist=True) as second:
        assert redis.Redis.from_url(second.url).get("k") == b"v"


def test_non_persistent_server_starts_empty(tmp_path):
    with EmbeddedRedis(tmp_path / "r") as first:
        redis.Redis.from_url(first.url).set("k", "v")
    with EmbeddedRedis(tmp_path / "r") as second:
        assert redis.Redis.from_url(second.url).get("k") is None


def test_port_in_use_gives_an_error_that_names_the_log(tmp_path):
    with EmbeddedRedis(tmp_path / "a") as running:
        clash = EmbeddedRedis(tmp_path / "b", port=running.port, start_timeout_s=3)
        try:
            clash.start()
            raise AssertionError("a second server started on a port in use")
        except RuntimeError as exc:
            assert "redis.log" in str(exc)


def test_a_persistent_server_keeps_acknowledged_writes_across_a_kill(tmp_path):
    """Append-only with everysec: a write older than a second survives kill -9 (an RDB snapshot would not have it)."""
    server = EmbeddedRedis(tmp_path / "r", persist=True)
    client = redis.Redis.from_url(server.start())
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    client.set("safe_mode", "on")
    time.sleep(2.0)  # everysec: fsynced within two seconds at worst (one in progress delays the next)
    server.kill()
    server.start()
    try:
        assert redis.Redis.from_url(server.url).get("safe_mode") == b"on"
    finally:
        server.stop()


def test_a_folder_with_only_an_rdb_dump_is_loaded_then_switched_to_append_only(tmp_path):
    with EmbeddedRedis(tmp_path / "r") as old:  # what earlier versions left: a dump, no append-only file
        client = redis.Redis.from_url(old.url)
        client.set("feature", "kept")
        client.save()
    with EmbeddedRedis(tmp_path / "r", persist=True) as upgraded:
        assert redis.Redis.from_url(upgraded.url).get("feature") == b"kept"
        assert (tmp_path / "r" / AOF_FILE).exists()
    with EmbeddedRedis(tmp_path / "r", persist=True) as again:  # from the append-only file now
        assert redis.Redis.from_url(again.url).get("feature") == b"kept"
