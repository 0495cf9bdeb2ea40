"""Redis plumbing shared by the policy counters: Lua replies from pipelines, hash-tag-safe key parts."""

from __future__ import annotations

from collections.abc import Callable

import redis


def script_reply(reply: object, rerun: Callable[[], object]) -> object:
    """A pipelined EVALSHA reply (from `execute(raise_on_error=False)`): NOSCRIPT, after Redis restarted and lost
    its script cache, runs the script directly (redis-py's Script loads it); any other error is raised."""
    if isinstance(reply, redis.exceptions.NoScriptError):
        return rerun()
    if isinstance(reply, Exception):
        raise reply
    return reply


def hash_tag_free(value: str, what: str) -> str:
    """`value` if it can go into a Redis key next to a `{...}` hash tag: non-empty and without braces."""
    if not value or "{" in value or "}" in value:
        raise ValueError(f"{what} must be non-empty and free of braces (they set the Redis Cluster hash tag); got {value!r}")
    return value
