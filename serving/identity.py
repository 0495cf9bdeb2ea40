"""Pseudonymous keys: decision traces and outcomes carry keyed hashes, never raw user ids or context."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any


def user_key(user_id: int, salt: str) -> str:
    """HMAC-SHA256 of the user id under `salt`, hex, 32 characters: stable per salt, not reversible without it."""
    return hmac.new(salt.encode(), str(int(user_id)).encode(), hashlib.sha256).hexdigest()[:32]


def context_hash(context: dict[str, Any] | None, salt: str) -> str:
    """HMAC-SHA256 of the request context as canonical JSON (sorted keys), hex, 32 characters."""
    canonical = json.dumps(context or {}, sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(salt.encode(), canonical.encode(), hashlib.sha256).hexdigest()[:32]
