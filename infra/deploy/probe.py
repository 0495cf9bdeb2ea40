"""Health probe of the images (python:3.11-slim has no curl): exit 0 when the URL answers 2xx, else 1 with why.

    python -m infra.deploy.probe http://127.0.0.1:8000/healthz [--timeout 3]

Used by the Dockerfiles' HEALTHCHECK and the compose file's healthchecks; Kubernetes probes the same paths itself.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request


def check(url: str, timeout_s: float) -> str | None:
    """None when `url` answers 2xx within `timeout_s`; else what went wrong, in one line."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (a URL we are given)
            return None if 200 <= response.status < 300 else f"{url} answered {response.status}"
    except urllib.error.HTTPError as error:
        return f"{url} answered {error.code}"
    except (urllib.error.URLError, OSError) as error:
        return f"{url} did not answer: {getattr(error, 'reason', error)}"


def main(argv: list[str] | None = None) -> int:
    """Entry point: 0 healthy, 1 not (the reason on stderr)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    problem = check(args.url, args.timeout)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
