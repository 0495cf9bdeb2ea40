"""Refuse to start a UI on a port another process holds: `python -m infra.ports PORT [NAME]` exits 2 with what to do.

`mlflow ui` on a taken port printed "Address already in use" and exited 0; `dagster dev` kept running without its
web server. The Makefile's UI targets check first (a process that takes the port between the check and the start
still wins the race; the check is for the common case of a UI left running).
"""

from __future__ import annotations

import errno
import socket
import sys


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """Whether binding `host:port` fails because the address is in use."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def main(argv: list[str]) -> int:
    if not argv or not argv[0].isdigit() or not 0 < int(argv[0]) < 65536:
        print("usage: python -m infra.ports PORT [NAME]", file=sys.stderr)
        return 2
    port, name = int(argv[0]), argv[1] if len(argv) > 1 else "the server"
    if port_taken(port):
        print(f"[hyperlift] port {port} is taken (is {name} already running? `ss -ltnp 'sport = :{port}'` shows "
              f"by whom); stop it, or start on another port: PORT={port + 1} make ...", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
