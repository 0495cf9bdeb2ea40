"""One log format for a worker: the service's lines and uvicorn's (start-up, errors, access) are JSON objects."""

import json
import logging
import subprocess
import sys

import pytest

from serving.ops import json_logs


@pytest.fixture
def restore_loggers():
    names = ("serving", "hyperlift.decisions", *json_logs.UVICORN_LOGGERS)
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).filters[:], logging.getLogger(n).propagate,
                 logging.getLogger(n).level, logging.getLogger(n).disabled) for n in names}
    yield
    for name, (handlers, filters, propagate, level, disabled) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:], logger.filters[:] = handlers, filters
        logger.propagate, logger.disabled = propagate, disabled
        logger.setLevel(level)


def test_uvicorn_access_lines_become_json_with_their_fields(restore_loggers, capsys):
    json_logs.configure(decisions=False)
    json_logs.configure(decisions=False)  # again (a second app in one process): still one filter, one line
    access = logging.getLogger("uvicorn.access")
    access.setLevel(logging.INFO)
    # exactly how uvicorn's httptools protocol logs a response
    access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:50312", "POST", "/v1/decisions", "1.1", 200)
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert len(lines) == 2
    line = lines[0]
    assert {k: line[k] for k in ("level", "logger", "client", "method", "path", "http_version", "status")} == {
        "level": "INFO", "logger": "uvicorn.access", "client": "127.0.0.1:50312", "method": "POST",
        "path": "/v1/decisions", "http_version": "1.1", "status": 200,
    }
    assert line["message"] == '127.0.0.1:50312 - "POST /v1/decisions HTTP/1.1" 200'
    assert (lines[1]["logger"], lines[1]["level"], lines[1]["message"]) == (
        "uvicorn.error", "WARNING", "Invalid HTTP request received.")


def test_an_access_record_of_another_shape_is_logged_unchanged(restore_loggers, capsys):
    json_logs.configure(decisions=False)
    access = logging.getLogger("uvicorn.access")
    access.setLevel(logging.INFO)
    access.info("plain %s", "text")
    line = json.loads(capsys.readouterr().err)
    assert line["message"] == "plain text" and "status" not in line


def test_a_served_app_writes_only_json_lines_after_start_up(tmp_path):
    """A real uvicorn serving an app that configures the logs at start-up, as serving.main does: every line it
    writes from then on, access lines included, parses as JSON."""
    app = tmp_path / "tiny_app.py"
    app.write_text(
        "from contextlib import asynccontextmanager\n"
        "from fastapi import FastAPI\n"
        "from serving.ops import json_logs\n"
        "@asynccontextmanager\n"
        "async def lifespan(app):\n"
        "    json_logs.configure(decisions=False)\n"
        "    yield\n"
        "app = FastAPI(lifespan=lifespan)\n"
        "@app.get('/ping')\n"
        "def ping():\n"
        "    return {'ok': True}\n"
    )
    script = (
        "import sys, threading, time, httpx, uvicorn\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "config = uvicorn.Config('tiny_app:app', port=0, log_level='info')\n"
        "server = uvicorn.Server(config)\n"
        "thread = threading.Thread(target=server.run, daemon=True); thread.start()\n"
        "while not server.started: time.sleep(0.05)\n"
        "port = server.servers[0].sockets[0].getsockname()[1]\n"
        "assert httpx.get(f'http://127.0.0.1:{port}/ping').status_code == 200\n"
        "server.should_exit = True; thread.join(10)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    started = next(i for i, line in enumerate(lines) if "Application startup complete" in line)
    parsed = [json.loads(line) for line in lines[started:]]  # raises on a line that is not JSON
    access = [p for p in parsed if p["logger"] == "uvicorn.access"]
    assert [(a["method"], a["path"], a["status"]) for a in access] == [("GET", "/ping", 200)]
    assert {p["logger"] for p in parsed} >= {"uvicorn.error", "uvicorn.access"}
