"""Lua scripts queued on pipelines: one round trip for several atomic steps of a decision."""

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
