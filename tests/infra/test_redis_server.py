import redis

from infra.redis_server import EmbeddedRedis


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
