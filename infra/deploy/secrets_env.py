"""Run a command with secrets read from files: `VAR_FILE=/run/secrets/x` sets `VAR` to the file's content.

    python -m infra.deploy.secrets_env -- COMMAND [ARGS...]

Compose and Kubernetes hand secrets to a container as files (`/run/secrets/<name>`, a mounted Secret); the project
reads them from variables (pydantic-settings). Only the variables in SECRET_VARIABLES are read this way: other
settings already end in `_FILE` and name a file the service reads itself (HYPERLIFT_SERVING_API_KEYS_FILE). The
process is replaced by COMMAND (exec), so signals reach it directly. Every image's ENTRYPOINT starts with this.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

SECRET_VARIABLES = (
    "HYPERLIFT_SERVING_HASH_SALT",
    "HYPERLIFT_PSEUDONYM_KEY",
    "HYPERLIFT_SERVING_ADMIN_TOKEN",
    "HYPERLIFT_POSTGRES_URL",
    "HYPERLIFT_DAGSTER_POSTGRES_URL",
    "HYPERLIFT_FEAST_REGISTRY_URL",
    "MLFLOW_TRACKING_URI",
    "REDIS_URL",
)
"""Settings that may carry a password or a key, so may come from a file (`<name>_FILE`)."""


class SecretFileError(ValueError):
    """A `<name>_FILE` variable that cannot be used; the message says what to fix."""


def resolve(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` with each `<name>_FILE` of SECRET_VARIABLES replaced by `<name>` holding the file's content."""
    resolved = dict(environ)
    for name in SECRET_VARIABLES:
        path = resolved.pop(f"{name}_FILE", None)
        if path is None:
            continue
        if name in environ:
            raise SecretFileError(f"both {name} and {name}_FILE are set; keep one (the file is for secrets)")
        try:
            value = Path(path).read_text().rstrip("\r\n")
        except OSError as error:
            raise SecretFileError(
                f"{name}_FILE={path}: cannot read it ({error.strerror}); mount the secret there or unset {name}_FILE"
            ) from error
        if not value:
            raise SecretFileError(f"{name}_FILE={path} is empty; write the secret into it")
        resolved[name] = value
    return resolved


def main(argv: list[str]) -> int:
    """Entry point: resolve the secret files, then replace this process with the command after `--`."""
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        environ = resolve(os.environ)
    except SecretFileError as error:
        print(f"[hyperlift] {error}", file=sys.stderr)
        return 2
    try:
        os.execvpe(argv[0], argv, environ)
    except OSError as error:
        print(f"[hyperlift] cannot run {argv[0]!r}: {error.strerror}; is it installed in the image?", file=sys.stderr)
        return 127
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
