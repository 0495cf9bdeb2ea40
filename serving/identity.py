"""Pseudonymous keys: decision traces and outcomes carry keyed hashes, never raw user ids or context."""

from __future__ import annotations

import hmac
import json
from typing import Any


def user_key(user_id: int, salt: str) -> str:
    """HMAC-SHA256 of the user id under `salt`, hex, 32 characters: stable per salt, not reversible without it."""
    return hmac.digest(salt.encode(), str(int(user_id)).encode(), "sha256").hex()[:32]  # one-shot: OpenSSL's HMAC


def context_hash(context: dict[str, Any] | None, salt: str) -> str:
    """HMAC-SHA256 of the request context as canonical JSON (sorted keys), hex, 32 characters."""
    canonical = json.dumps(context or {}, sort_keys=True, separators=(",", ":"), default=str)
    return hmac.digest(salt.encode(), canonical.encode(), "sha256").hex()[:32]
