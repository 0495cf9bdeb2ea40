"""The images' small entry points: secrets from files (secrets_env), the health probe (probe), and the secrets
compose reads (make_secrets)."""

from __future__ import annotations

import http.server
import stat
import subprocess
import sys
import threading

import pytest

from infra import keys
from infra.deploy import make_secrets, probe, secrets_env
from infra.keys import Pseudonymizer
from serving.ops.api_keys import hash_secret, load_keys
from tests.infra.deploy.stack import free_port


def test_a_secret_file_becomes_its_variable_without_the_trailing_newline(tmp_path):
    (tmp_path / "salt").write_text("s3cr3t-salt-of-24-chars\n")
    resolved = secrets_env.resolve({"HYPERLIFT_SERVING_HASH_SALT_FILE": str(tmp_path / "salt"), "OTHER": "1"})
    assert resolved == {"HYPERLIFT_SERVING_HASH_SALT": "s3cr3t-salt-of-24-chars", "OTHER": "1"}


def test_settings_that_name_files_are_left_alone(tmp_path):
    environ = {"HYPERLIFT_SERVING_API_KEYS_FILE": "/run/secrets/api_keys"}
    assert secrets_env.resolve(environ) == environ


@pytest.mark.parametrize(("setup", "message"), [
    ("both", "both REDIS_URL and REDIS_URL_FILE are set; keep one"),
    ("missing", "REDIS_URL_FILE={path}: cannot read it (No such file or directory); mount the secret there"),
    ("empty", "REDIS_URL_FILE={path} is empty; write the secret into it"),
])
def test_unusable_secret_files_are_refused_with_what_to_do(tmp_path, setup, message):
    path = tmp_path / "redis_url"
    if setup == "empty":
        path.write_text("\n")
    environ = {"REDIS_URL_FILE": str(path)} | ({"REDIS_URL": "redis://x:6379/0"} if setup == "both" else {})
    if setup == "both":
        path.write_text("redis://y:6379/0")
    with pytest.raises(secrets_env.SecretFileError) as error:
        secrets_env.resolve(environ)
    assert str(error.value).startswith(message.format(path=path))


def test_the_entry_point_replaces_itself_with_the_command(tmp_path):
    (tmp_path / "url").write_text("redis://cache:6379/2\n")
    result = subprocess.run(
        [sys.executable, "-m", "infra.deploy.secrets_env", "--", sys.executable, "-c",
         "import os; print(os.environ['REDIS_URL'], 'REDIS_URL_FILE' in os.environ, os.getpid())"],
        env={"REDIS_URL_FILE": str(tmp_path / "url"), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:2] == ["redis://cache:6379/2", "False"]


def test_the_entry_point_stops_with_the_reason_and_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "infra.deploy.secrets_env", "--", "true"],
        env={"HYPERLIFT_POSTGRES_URL_FILE": str(tmp_path / "absent"), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "HYPERLIFT_POSTGRES_URL_FILE" in result.stderr and "Traceback" not in result.stderr


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        self.send_response(200 if self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_the_probe_passes_on_2xx_and_says_why_otherwise():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        assert probe.check(f"{base}/healthz", 3) is None
        assert probe.check(f"{base}/readyz", 3) == f"{base}/readyz answered 503"
        assert probe.main([f"{base}/healthz"]) == 0 and probe.main([f"{base}/readyz"]) == 1
    finally:
        server.shutdown()
    closed = f"http://127.0.0.1:{free_port()}/healthz"
    assert probe.check(closed, 1).startswith(f"{closed} did not answer: ")


def test_make_secrets_writes_the_four_files_readable_by_the_containers_user(tmp_path):
    directory = tmp_path / "secrets"
    secret = make_secrets.make_secrets(directory, "shop", ["decide", "outcomes"])
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()} == {
        name: 0o644 for name in make_secrets.FILES}
    password = (directory / "postgres_password").read_text().strip()
    assert (directory / "postgres_url").read_text() == f"postgresql://hyperlift:{password}@postgres:5432/hyperlift\n"
    assert len((directory / "hash_salt").read_text().strip()) >= 16  # production mode refuses shorter salts
    pseudonym_key = (directory / "pseudonym_key").read_text().strip()
    assert len(bytes.fromhex(pseudonym_key)) == 32  # HYPERLIFT_PSEUDONYM_KEY: what infra.keys accepts
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(keys.PSEUDONYM_ENV, pseudonym_key)
        assert keys.pseudonymizers(path=tmp_path / "none.json")[0](7) == Pseudonymizer(pseudonym_key)(7)
    [key] = load_keys(directory / "api_keys.yaml").keys
    assert (key.id, key.sha256, list(key.scopes)) == ("shop", hash_secret(secret), ["decide", "outcomes"])


def test_make_secrets_never_overwrites_a_deployment_s_secrets(tmp_path):
    make_secrets.make_secrets(tmp_path, "shop", ["decide"])
    salt = (tmp_path / "hash_salt").read_text()
    with pytest.raises(FileExistsError,
                       match="already holds hash_salt, pseudonym_key, postgres_password, postgres_url, api_keys.yaml"):
        make_secrets.make_secrets(tmp_path, "shop", ["decide"])
    assert (tmp_path / "hash_salt").read_text() == salt
