"""Every secret key of the project: where it lives, how it is made on first use, and how it is rotated.

    python -m infra.keys show                                     # versions and dates, never the secrets
    python -m infra.keys rotate trace-salt|pseudonym [--reason ...] [--compromised] [--reshuffle-experiments]
    python -m infra.keys adopt [trace-salt|pseudonym]             # HYPERLIFT_SERVING_HASH_SALT / _PSEUDONYM_KEY in

Two keys (docs/privacy.md, "Keys and pseudonyms"):
- `trace-salt`: the HMAC key of the decision log's `user_key`, of `context_hash`, of idempotent outcome ids and of the
  check in decision ids (`serving.decision.identity`). Experiment arms and frequency caps hang off `user_key`.
- `pseudonym`: the HMAC key of the 63-bit integer pseudonym of a user id (`Pseudonymizer`).

They live in one JSON file, mode 0600 in a 0700 folder: HYPERLIFT_KEYS_FILE (a deployment's mounted secret), else
`$HYPERLIFT_HOME/keys/keys.json`, never inside the parquet lake or MLflow's stores (refused). Each key is a list of
versions; the newest is current (writes), the older ones are retired but kept for reading: erasure finds a user's
rows written under any version, and outcomes of decisions made before a rotation still pass the decision-id check
(unless the rotation was marked `--compromised`). Deleting a retired version from the file makes what was written
under it unlinkable for good. HYPERLIFT_SERVING_HASH_SALT and HYPERLIFT_PSEUDONYM_KEY, when set, override the current
trace salt and pseudonym key (the file's versions stay readable as retired ones); rotating needs the key in the file
(`adopt`).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import secrets
import stat
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from infra.audit import AuditLog, cli_actor, default_log
from infra.file_lock import file_lock
from infra.settings import HyperliftSettings

TRACE_SALT = "trace-salt"
PSEUDONYM = "pseudonym"
KEY_NAMES = (TRACE_SALT, PSEUDONYM)
TRACE_SALT_ENV = "HYPERLIFT_SERVING_HASH_SALT"
PSEUDONYM_ENV = "HYPERLIFT_PSEUDONYM_KEY"
"""A deployment's pseudonym key as a secret variable (64 hex characters; compose and Kubernetes hand it to every
container that keys or reads the lake): it overrides the key file's current version, as HYPERLIFT_SERVING_HASH_SALT
does the trace salt's."""
ENV_OF = {TRACE_SALT: TRACE_SALT_ENV, PSEUDONYM: PSEUDONYM_ENV}
KEYS_FILE_ENV = "HYPERLIFT_KEYS_FILE"
FILE_FORMAT = 1
SECRET_BYTES = 32
"""256 random bits per version, as 64 hex characters."""
PSEUDONYM_MASK = (1 << 53) - 1
"""Pseudonyms are the HMAC's first 8 bytes cut to 53 bits: a nonnegative int64 inside the contracts' id range
(`MAX_ID` = 2^53 − 1), so a pseudonym passes every check a raw id does, survives a float64 column (pandas turns an
int column with a gap into float64, exact up to 2^53) and a JSON number. Two of 10 million users share one with
probability ~0.6 % (n²/2^54); their lake rows would then merge."""


class KeysError(RuntimeError):
    """The key file cannot be used as it is; the message says what to do."""


@dataclass(frozen=True)
class KeyVersion:
    """One version of a key: the secret (hex), when it was made, when it was retired and whether it leaked."""

    version: int
    secret: str
    created: float
    retired: float | None = None
    compromised: bool = False

    def public(self) -> dict[str, Any]:
        """Everything but the secret, fit to print and to audit."""
        return {k: v for k, v in asdict(self).items() if k != "secret"}


def key_file(settings: HyperliftSettings | None = None) -> Path:
    """HYPERLIFT_KEYS_FILE, else `$HYPERLIFT_HOME/keys/keys.json`; refused inside the lake or MLflow's stores."""
    settings = settings or HyperliftSettings()
    configured = os.environ.get(KEYS_FILE_ENV)
    path = Path(configured) if configured else settings.home / "keys" / "keys.json"
    check_location(path, settings)
    return path


def check_location(path: Path, settings: HyperliftSettings) -> None:
    """Refuse a key file inside the parquet lake or MLflow's stores: those are copied, exported and shared."""
    resolved = path.resolve()
    for name, folder in (("the parquet lake", settings.data_dir), ("MLflow's artifacts", settings.mlflow_artifacts_dir),
                         ("MLflow's store", settings.home / "mlflow")):
        if resolved.is_relative_to(folder.resolve()):
            raise KeysError(f"key file {path} is inside {name} ({folder}): keys must live outside the data they key; "
                            f"set {KEYS_FILE_ENV} to a path outside it (default: $HYPERLIFT_HOME/keys/keys.json)")


def _read(path: Path) -> dict[str, list[KeyVersion]]:
    """The file's versions per key name, oldest first ({} when there is no file)."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):  # no file (yet): making one says why it cannot
        return {}
    if mode & (stat.S_IRWXG | stat.S_IRWXO) & ~stat.S_IRGRP:
        raise KeysError(f"key file {path} is open to other users (mode {stat.filemode(mode)}): run `chmod 600 {path}` "
                        "(a Kubernetes secret: defaultMode 0400 or 0440)")
    try:
        raw = json.loads(path.read_text())
        return {name: [KeyVersion(**v) for v in versions] for name, versions in raw["keys"].items()}
    except (ValueError, KeyError, TypeError) as exc:
        raise KeysError(f"key file {path} is not a key file of format {FILE_FORMAT} ({exc}); restore it from the "
                        "secret store's copy (a new key would make every stored pseudonym unlinkable)") from exc


def _write(path: Path, keys: dict[str, list[KeyVersion]]) -> None:
    """Write the file atomically (temp file + rename), 0600 in a 0700 folder, fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = json.dumps({"format": FILE_FORMAT, "keys": {n: [asdict(v) for v in vs] for n, vs in keys.items()}},
                      indent=1).encode()
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _new_version(number: int) -> KeyVersion:
    return KeyVersion(number, secrets.token_hex(SECRET_BYTES), time.time())


def versions(name: str, *, create: bool = False, path: Path | None = None) -> tuple[KeyVersion, ...]:
    """The versions of key `name`, current (newest) first; with `create`, version 1 is generated when the file has
    none (under a lock: processes starting together agree on one). Empty when there is none and `create` is off."""
    if name not in KEY_NAMES:
        raise KeysError(f"unknown key {name!r}: the keys are {list(KEY_NAMES)}")
    path = path or key_file()
    found = _read(path).get(name, [])
    if not found and create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with file_lock(path.with_name(path.name + ".lock")):
                keys = _read(path)
                found = keys.get(name, [])
                if not found:
                    found = keys[name] = [_new_version(1)]
                    _write(path, keys)
        except OSError as exc:
            raise KeysError(f"cannot make the {name} key in {path} ({exc}): make its folder writable, or point "
                            f"{KEYS_FILE_ENV} at a writable path (the trace salt may also come from "
                            f"{TRACE_SALT_ENV})") from exc
    return tuple(reversed(found))


def trace_salts(*, create: bool = False, path: Path | None = None) -> tuple[str, ...]:
    """The trace salt, current first, then the retired ones (HYPERLIFT_SERVING_HASH_SALT, when set, is current)."""
    stored = [v.secret for v in versions(TRACE_SALT, create=create and TRACE_SALT_ENV not in os.environ, path=path)]
    configured = os.environ.get(TRACE_SALT_ENV)
    if configured:
        return (configured, *[s for s in stored if s != configured])
    return tuple(stored)


def trace_salt(*, create: bool = False, path: Path | None = None) -> str | None:
    """The current trace salt (see `trace_salts`); None when none is configured or stored and `create` is off."""
    salts = trace_salts(create=create, path=path)
    return salts[0] if salts else None


def trusted_former_salts(current: str, *, path: Path | None = None) -> tuple[str, ...]:
    """Retired trace salts whose decision ids are still honoured next to `current`: not marked compromised."""
    return tuple(v.secret for v in versions(TRACE_SALT, path=path) if v.secret != current and not v.compromised)


def former_salts(current: str, *, path: Path | None = None) -> tuple[str, ...]:
    """Every other stored version of the trace salt (erasure looks for a user's pseudonyms under all of them)."""
    return tuple(v.secret for v in versions(TRACE_SALT, path=path) if v.secret != current)


def rotate(name: str, actor: str, reason: str, *, compromised: bool = False, path: Path | None = None,
           audit: AuditLog | None = None) -> KeyVersion:
    """Make a new current version of key `name`; the previous ones are retired (kept for reading). Audited."""
    if name not in KEY_NAMES:
        raise KeysError(f"unknown key {name!r}: the keys are {list(KEY_NAMES)}")
    if os.environ.get(ENV_OF[name]):
        raise KeysError(f"the {name} key is set by {ENV_OF[name]}: run `python -m infra.keys adopt {name}` to keep it "
                        f"in the key file, unset {ENV_OF[name]} everywhere the service, Dagster and the erasure run, "
                        "then rotate")
    path = path or key_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with file_lock(path.with_name(path.name + ".lock")):
        keys = _read(path)
        old = keys.get(name, [])
        now = time.time()
        retired = [KeyVersion(v.version, v.secret, v.created, v.retired or now, v.compromised or compromised)
                   for v in old]
        new = _new_version(max((v.version for v in old), default=0) + 1)
        keys[name] = retired + [new]
        try:
            _write(path, keys)
        except OSError as exc:
            raise KeysError(f"cannot write key file {path} ({exc}): a mounted secret is rotated in its secret "
                            "store; copy the file, rotate the copy with HYPERLIFT_KEYS_FILE pointing at it, and upload "
                            "it") from exc
    (audit or default_log()).record(actor, "key.rotate", target=f"key:{name}", reason=reason, version=new.version,
                                    previous=old[-1].version if old else None, compromised=compromised)
    return new


def adopt(actor: str, *, name: str = TRACE_SALT, path: Path | None = None,
          audit: AuditLog | None = None) -> KeyVersion:
    """Store the key `name` set by its variable (HYPERLIFT_SERVING_HASH_SALT, HYPERLIFT_PSEUDONYM_KEY) in the key
    file as its current version (a new version unless it is the current one already), so it can be rotated;
    audited."""
    if name not in KEY_NAMES:
        raise KeysError(f"unknown key {name!r}: the keys are {list(KEY_NAMES)}")
    variable = ENV_OF[name]
    configured = os.environ.get(variable)
    if not configured:
        raise KeysError(f"{variable} is not set: nothing to adopt (the key file already holds the {name} key)")
    if name == PSEUDONYM:
        _check_pseudonym_secret(configured)
    path = path or key_file()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with file_lock(path.with_name(path.name + ".lock")):
        keys = _read(path)
        old = keys.get(name, [])
        if old and old[-1].secret == configured:
            return old[-1]
        now = time.time()
        adopted = KeyVersion(max((v.version for v in old), default=0) + 1, configured, now)
        keys[name] = [KeyVersion(v.version, v.secret, v.created, v.retired or now, v.compromised)
                      for v in old] + [adopted]
        _write(path, keys)
    (audit or default_log()).record(actor, "key.adopt", target=f"key:{name}", reason=f"from {variable}",
                                    version=adopted.version)
    return adopted


class Pseudonymizer:
    """The keyed 53-bit pseudonym of a user id: HMAC-SHA256(key, id as 8 big-endian bytes), first 8 bytes, cut to
    `PSEUDONYM_MASK`. A nonnegative int64 like the ids it replaces, so every dtype, join and Feast entity stays as it
    is; not reversible without the key. The key's HMAC state is made once and copied per id (about 1 µs)."""

    def __init__(self, secret: str, version: int = 0):
        self.version = version
        self._keyed = hmac.new(bytes.fromhex(secret), digestmod=hashlib.sha256)

    def __call__(self, user_id: int) -> int:
        """The pseudonym of one id (0..2^53-1)."""
        keyed = self._keyed.copy()
        keyed.update(int(user_id).to_bytes(8, "big", signed=True))
        return int.from_bytes(keyed.digest()[:8], "big") & PSEUDONYM_MASK

    def many(self, user_ids: np.ndarray) -> np.ndarray:
        """Pseudonyms of an array of ids, as int64."""
        return np.fromiter((self(int(u)) for u in user_ids), dtype=np.int64, count=len(user_ids))


def pseudonymizers(*, create: bool = False, path: Path | None = None) -> tuple[Pseudonymizer, ...]:
    """One per version of the pseudonym key, current first (writes use the first, erasure all of them).
    HYPERLIFT_PSEUDONYM_KEY, when set, is the current one (its stored version's number, or the next one) and the
    file's other versions are retired ones; nothing is made then."""
    configured = os.environ.get(PSEUDONYM_ENV)
    stored = versions(PSEUDONYM, create=create and not configured, path=path)
    if not configured:
        return tuple(Pseudonymizer(v.secret, v.version) for v in stored)
    _check_pseudonym_secret(configured)
    number = next((v.version for v in stored if v.secret == configured),
                  max((v.version for v in stored), default=0) + 1)
    return (Pseudonymizer(configured, number),
            *(Pseudonymizer(v.secret, v.version) for v in stored if v.secret != configured))


def _check_pseudonym_secret(secret: str) -> None:
    if len(secret) < 2 * 16 or len(secret) % 2:
        raise KeysError(f"{PSEUDONYM_ENV} must be at least 32 hex characters (64 recommended: "
                        "python -c 'import secrets; print(secrets.token_hex(32))')")
    try:
        bytes.fromhex(secret)
    except ValueError as exc:
        raise KeysError(f"{PSEUDONYM_ENV} is not hex: make one with "
                        "python -c 'import secrets; print(secrets.token_hex(32))'") from exc


def running_experiments() -> list[str]:
    """Experiments the service's experiments file configures (HYPERLIFT_SERVING_EXPERIMENTS_FILE, else the shipped
    one): their arms are drawn from `user_key`, so a new trace salt re-draws every user's arm."""
    from serving.decision.experiments import load_experiments
    from serving.decision.surfaces import DEFAULT_CONFIG_DIR

    path = Path(os.environ.get("HYPERLIFT_SERVING_EXPERIMENTS_FILE") or DEFAULT_CONFIG_DIR / "experiments.yaml")
    if not path.exists():
        return []
    return [e.name for layer in load_experiments(path).layers for e in layer.experiments]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.keys", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("show", help="each key's versions and dates (never the secrets), and where the file is")
    rotate_cmd = commands.add_parser("rotate", help="a new current version; the old ones stay readable, retired")
    rotate_cmd.add_argument("name", choices=KEY_NAMES)
    rotate_cmd.add_argument("--reason", default="scheduled rotation")
    rotate_cmd.add_argument("--compromised", action="store_true",
                            help="the old versions leaked: decision ids checked under them are refused from now on")
    rotate_cmd.add_argument("--reshuffle-experiments", action="store_true",
                            help="rotate the trace salt although experiments are configured (their users are re-drawn)")
    adopt_cmd = commands.add_parser("adopt", help=f"keep {TRACE_SALT_ENV} (or {PSEUDONYM_ENV}) in the key file as "
                                                  "the key's current version")
    adopt_cmd.add_argument("name", nargs="?", choices=KEY_NAMES, default=TRACE_SALT)
    args = parser.parse_args(argv)
    try:
        path = key_file()
        if args.command == "rotate":
            running = running_experiments() if args.name == TRACE_SALT else []
            if running and not args.reshuffle_experiments:
                raise KeysError(
                    f"experiments {running} draw their arms from user_key, which the trace salt keys: a rotation "
                    "re-draws every user's arm mid-experiment. End them and start new ones from the rotation on "
                    "(readouts must not span it), then rerun with --reshuffle-experiments to confirm")
            new = rotate(args.name, cli_actor(), args.reason, compromised=args.compromised, path=path)
            print(json.dumps({"key": args.name, "file": str(path), **new.public()}))
            print(f"restart every decision-service worker and Dagster code location to use version {new.version} "
                  "(docs/privacy.md, 'Rotating a key')" + (
                      "; frequency caps count from zero under the new user_key" if args.name == TRACE_SALT else ""),
                  file=sys.stderr)
        elif args.command == "adopt":
            adopted = adopt(cli_actor(), name=args.name, path=path)
            print(json.dumps({"key": args.name, "file": str(path), **adopted.public()}))
        else:
            shown = {name: [v.public() for v in versions(name, path=path)] for name in KEY_NAMES}
            print(json.dumps({"file": str(path), "trace_salt_from_env": TRACE_SALT_ENV in os.environ,
                              "pseudonym_key_from_env": PSEUDONYM_ENV in os.environ, "keys": shown}, indent=2))
    except KeysError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
