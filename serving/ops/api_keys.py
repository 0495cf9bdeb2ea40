"""API keys: the keys file, the ring that tells which key a request presents, and the CLI that creates keys.

The keys file (HYPERLIFT_SERVING_API_KEYS_FILE, YAML or JSON) holds per key an id, the SHA-256 (hex) of its secret
and its scopes; never a secret:

    keys:
      - {id: shop-a, sha256: 9f86d0…, scopes: [decide, outcomes]}

`python -m serving.ops.api_keys create --file keys.yaml --id shop-a --scopes decide,outcomes` adds a key and prints
its secret once. Clients send it as `Authorization: Bearer <secret>`. A presented secret is hashed and looked up
by its digest (a dict lookup: no secret is compared, so there is nothing to time), and the header values of the
last few thousand valid keys are remembered, so the decision path pays a dict lookup, not a hash.
Key rotation and expiry are not handled here: replace the file and restart the workers.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import secrets
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

if TYPE_CHECKING:
    from serving.core.config import ServingSettings

log = logging.getLogger(__name__)

Scope = Literal["decide", "events", "outcomes", "consent", "ops", "admin"]
DECIDE, EVENTS, OUTCOMES, CONSENT, OPS, ADMIN = SCOPES = ("decide", "events", "outcomes", "consent", "ops", "admin")
"""Route families: decide (POST /v1/decisions), events (POST /v1/events), outcomes (POST /v1/outcomes), consent
(POST /v1/consent, GET /v1/consent/{user_id}), ops (GET /metrics, /v1/stats), admin (/v1/admin/*). /healthz, /readyz
and the API docs are open."""
ANONYMOUS = "anonymous"
"""The client id of a request without a valid key."""
ADMIN_TOKEN_ID = "admin-token"
"""The key id of HYPERLIFT_SERVING_ADMIN_TOKEN, which is a key with the admin scope only."""
HEADER_CACHE_SIZE = 4096
"""Authorization header values of valid keys remembered (only valid ones: random tokens cannot evict them)."""
SECRET_BYTES = 32
MIN_PRODUCTION_SALT = 16
DEV_MODE_WARNING = (
    "HYPERLIFT_SERVING_MODE=dev: authentication is OFF - every route is open to anyone who can reach this port "
    "(/v1/admin/* too, unless HYPERLIFT_SERVING_ADMIN_TOKEN is set). For one machine only; never expose it."
)


class KeysFileError(ValueError):
    """The keys file cannot be used; the message names the file and what to fix."""


class UnsafeProduction(RuntimeError):
    """Production mode without what it needs (keys, a secret hash salt); the message names the variables to set."""


class KeyEntry(BaseModel):
    """One key of the keys file: never its secret, only the secret's SHA-256."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="Names the client in logs and limits.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the secret, lowercase hex.")
    scopes: list[Scope] = Field(min_length=1)

    @field_validator("sha256", mode="before")
    @classmethod
    def _text(cls, value: object) -> object:
        """YAML reads a hash of digits only as a number (and drops its leading zeros): say to quote it."""
        if isinstance(value, int):
            raise ValueError('the hash must be text: quote it ("...") in the file')
        return value


class KeysFile(BaseModel):
    """The keys file: ids and digests unique."""

    model_config = ConfigDict(extra="forbid")

    keys: list[KeyEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> KeysFile:
        for name in ("id", "sha256"):
            values = [getattr(k, name) for k in self.keys]
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                raise ValueError(f"duplicate key {name}s {twice}")
        return self


@dataclass(frozen=True)
class ApiKey:
    """A caller: its key id and what it may call."""

    id: str
    scopes: frozenset[str]


def hash_secret(secret: str | bytes) -> str:
    """SHA-256 of a key's secret, lowercase hex (what the keys file holds)."""
    return hashlib.sha256(secret.encode() if isinstance(secret, str) else secret).hexdigest()


def new_secret() -> str:
    """A new key secret: 256 random bits, URL-safe text (`hlk_` + 43 characters)."""
    return "hlk_" + secrets.token_urlsafe(SECRET_BYTES)


def load_keys(path: Path) -> KeysFile:
    """Read and validate the keys file; raises KeysFileError naming it. An empty file holds no keys."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise KeysFileError(
            f"{path}: cannot read the keys file ({exc.strerror}); fix HYPERLIFT_SERVING_API_KEYS_FILE"
        ) from exc
    except yaml.YAMLError as exc:
        raise KeysFileError(f"{path}: not valid YAML or JSON: {exc}") from exc
    try:
        return KeysFile.model_validate(data or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(file)'}: {e['msg']}" for e in exc.errors())
        raise KeysFileError(f"{path}: {problems}") from exc


def save_keys(path: Path, keys: KeysFile) -> None:
    """Write the keys file atomically, readable by its owner only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:  # mkstemp: mode 0600
            yaml.safe_dump(keys.model_dump(mode="json"), handle, sort_keys=False)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


class KeyRing:
    """Which key an `Authorization` header presents, and which scopes are open to anyone (dev mode)."""

    def __init__(self, keys: Iterable[tuple[str, ApiKey]], open_scopes: Iterable[str] = ()):
        self._by_digest = {bytes.fromhex(digest): key for digest, key in keys}
        self._by_header: dict[bytes, ApiKey] = {}
        self.open_scopes = frozenset(open_scopes)

    def __len__(self) -> int:
        return len(self._by_digest)

    def identify(self, authorization: bytes | None) -> ApiKey | None:
        """The key of an `Authorization: Bearer <secret>` header value, or None (missing, another scheme, unknown)."""
        if authorization is None:
            return None
        key = self._by_header.get(authorization)
        if key is not None:
            return key
        scheme, _, token = authorization.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            return None
        key = self._by_digest.get(hashlib.sha256(token).digest())
        if key is not None:
            if len(self._by_header) >= HEADER_CACHE_SIZE:  # bounded; only valid keys get here, so it rarely fills
                self._by_header.clear()
            self._by_header[authorization] = key
        return key


def build_key_ring(settings: ServingSettings) -> KeyRing:
    """The keys of the settings (the keys file, plus the admin token as an admin-only key) and the mode's open
    scopes. Production mode refuses to start with the default or a short hash salt, or without keys
    (UnsafeProduction); dev mode says loudly that it is open."""
    entries = load_keys(settings.api_keys_file).keys if settings.api_keys_file is not None else []
    keys = [(e.sha256, ApiKey(e.id, frozenset(e.scopes))) for e in entries]
    if settings.admin_token:
        digest = hash_secret(settings.admin_token)
        if any(d == digest for d, _ in keys):
            raise KeysFileError(f"{settings.api_keys_file}: HYPERLIFT_SERVING_ADMIN_TOKEN is also a key of this file; "
                                "use one or the other")
        keys.append((digest, ApiKey(ADMIN_TOKEN_ID, frozenset({ADMIN}))))
    if settings.mode == "dev":
        log.warning(DEV_MODE_WARNING)
        return KeyRing(keys, set(SCOPES) - ({ADMIN} if settings.admin_token else set()))
    refuse_unsafe_production(settings, len(entries))
    return KeyRing(keys)


def refuse_unsafe_production(settings: ServingSettings, n_keys: int) -> None:
    """Raise UnsafeProduction, naming the variables to set, when production mode lacks keys or a secret salt."""
    problems = []
    if settings.hash_salt == type(settings).model_fields["hash_salt"].default:
        problems.append(
            f"HYPERLIFT_SERVING_HASH_SALT is the public default: set a secret of at least {MIN_PRODUCTION_SALT} "
            "characters, the same on every start (e.g. once: python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    elif len(settings.hash_salt) < MIN_PRODUCTION_SALT:
        problems.append(
            f"HYPERLIFT_SERVING_HASH_SALT is shorter than {MIN_PRODUCTION_SALT} characters: set a longer secret"
        )
    if n_keys == 0:
        where = settings.api_keys_file or "unset"
        problems.append(f"no API keys (HYPERLIFT_SERVING_API_KEYS_FILE: {where}): create them with "
                        "`python -m serving.ops.api_keys create --file <keys.yaml> --id <client> --scopes decide,...` "
                        "and point HYPERLIFT_SERVING_API_KEYS_FILE at the file")
    if problems:
        raise UnsafeProduction(
            "refusing to start in production mode (HYPERLIFT_SERVING_MODE=production, the default): "
            + "; ".join(problems) + ". On one machine, for development only, set HYPERLIFT_SERVING_MODE=dev."
        )


# ---------------------------------------------------------------------------------------------------------- the CLI
def create(path: Path, key_id: str, scopes: list[str]) -> str:
    """Add a key to the keys file (created if missing) and return its secret; only its hash is written."""
    keys = load_keys(path) if Path(path).exists() else KeysFile()
    if any(k.id == key_id for k in keys.keys):
        raise KeysFileError(f"{path}: key id {key_id!r} exists; revoke it first or choose another id")
    secret = new_secret()
    try:
        entry = KeyEntry.model_validate({"id": key_id, "sha256": hash_secret(secret), "scopes": scopes})
    except ValidationError as exc:
        raise KeysFileError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from exc
    save_keys(path, KeysFile(keys=[*keys.keys, entry]))
    return secret


def revoke(path: Path, key_id: str) -> None:
    """Remove a key from the keys file (running workers keep it until they restart)."""
    keys = load_keys(path)
    kept = [k for k in keys.keys if k.id != key_id]
    if len(kept) == len(keys.keys):
        raise KeysFileError(f"{path}: no key with id {key_id!r}; ids: {[k.id for k in keys.keys]}")
    save_keys(path, KeysFile(keys=kept))


def main(argv: list[str] | None = None) -> int:
    """`create`, `list` or `revoke` keys of a keys file."""
    parser = argparse.ArgumentParser(prog="python -m serving.ops.api_keys", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    made = commands.add_parser("create", help="add a key; prints its secret once (only its hash is stored)")
    made.add_argument("--id", required=True, help="the client's name, e.g. shop-a")
    made.add_argument("--scopes", required=True, help=f"comma-separated, of {','.join(SCOPES)}")
    listed = commands.add_parser("list", help="ids and scopes of the keys")
    gone = commands.add_parser("revoke", help="remove a key")
    gone.add_argument("--id", required=True)
    for sub in (made, listed, gone):
        sub.add_argument("--file", type=Path, required=True, help="the keys file (HYPERLIFT_SERVING_API_KEYS_FILE)")
    args = parser.parse_args(argv)
    try:
        if args.command == "create":
            secret = create(args.file, args.id, [s.strip() for s in args.scopes.split(",") if s.strip()])
            print(secret)
            print(f"key {args.id!r} added to {args.file}; the secret above is shown once and not stored: give it to "
                  "the client (Authorization: Bearer <secret>)", file=sys.stderr)
        elif args.command == "list":
            for key in load_keys(args.file).keys:
                print(f"{key.id}\t{','.join(key.scopes)}")
        else:
            revoke(args.file, args.id)
            print(f"key {args.id!r} removed from {args.file}; restart the workers to drop it", file=sys.stderr)
    except KeysFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
