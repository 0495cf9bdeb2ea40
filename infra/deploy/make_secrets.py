"""Write the secrets compose.yaml reads, once: a hash salt, the lake's pseudonym key, a Postgres password and URL,
and an API keys file.

    python -m infra.deploy.make_secrets infra/deploy/secrets [--key-id shop] [--scopes decide,outcomes,events]

Prints the API key's secret once (only its SHA-256 is stored). Refuses to overwrite: the salt keys the trace's user
hashes and the pseudonym key the lake's user ids, so a new one on a running deployment would split every user's
history in two (a pseudonym key is rotated with `infra.keys` and `infra.rekey`, docs/privacy.md). The folder is
made 0700 and the files 0644: compose (without swarm) bind-mounts secret files as they are, and the containers'
user (uid 10001) must read them; the folder's mode keeps other users of the host out. For Kubernetes the same files feed
`kubectl create secret` (docs/deploy.md).
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

from serving.ops.api_keys import KeysFileError, create

FILES = ("hash_salt", "pseudonym_key", "postgres_password", "postgres_url", "api_keys.yaml")
POSTGRES_USER, POSTGRES_HOST, POSTGRES_DATABASE = "hyperlift", "postgres", "hyperlift"


def make_secrets(directory: Path, key_id: str, scopes: list[str]) -> str:
    """Write the five files into `directory` (which must hold none of them); returns the API key's secret."""
    existing = [name for name in FILES if (directory / name).exists()]
    if existing:
        raise FileExistsError(
            f"{directory} already holds {', '.join(existing)}; keep them (a new hash salt splits every user's "
            "history), or move the folder away to start a new deployment"
        )
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    password = secrets.token_urlsafe(24)
    contents = {
        "hash_salt": secrets.token_urlsafe(32),
        "pseudonym_key": secrets.token_hex(32),  # HYPERLIFT_PSEUDONYM_KEY: 256 bits as hex (infra/keys.py)
        "postgres_password": password,
        "postgres_url": f"postgresql://{POSTGRES_USER}:{password}@{POSTGRES_HOST}:5432/{POSTGRES_DATABASE}",
    }
    for name, value in contents.items():
        (directory / name).write_text(value + "\n")
        (directory / name).chmod(0o644)
    secret = create(directory / "api_keys.yaml", key_id, scopes)
    (directory / "api_keys.yaml").chmod(0o644)
    return secret


def main(argv: list[str] | None = None) -> int:
    """Entry point: write the files, print the key's secret."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--key-id", default="shop")
    parser.add_argument("--scopes", default="decide,outcomes,events,consent")
    args = parser.parse_args(argv)
    try:
        secret = make_secrets(args.directory, args.key_id, args.scopes.split(","))
    except (FileExistsError, KeysFileError) as error:
        print(error, file=sys.stderr)
        return 2
    print(f"wrote {', '.join(FILES)} to {args.directory}")
    print(f"API key {args.key_id!r} ({args.scopes}); its secret, shown once: {secret}")
    print("call with: Authorization: Bearer <secret>")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
