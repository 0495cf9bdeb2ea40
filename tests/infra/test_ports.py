"""The UI targets' port check: a taken port stops the start with what to do, a free one lets it go."""

import socket
import subprocess
import sys

from infra.ports import port_taken


def test_a_taken_port_is_refused_with_what_to_do_and_a_free_one_is_not():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert port_taken(port)
        result = subprocess.run([sys.executable, "-m", "infra.ports", str(port), "the MLflow UI"],
                                capture_output=True, text=True)
        assert result.returncode == 2
        assert f"port {port} is taken (is the MLflow UI already running?" in result.stderr
        assert f"PORT={port + 1} make" in result.stderr
    assert not port_taken(port)
    assert subprocess.run([sys.executable, "-m", "infra.ports", str(port)]).returncode == 0
    assert subprocess.run([sys.executable, "-m", "infra.ports", "http"], capture_output=True).returncode == 2
