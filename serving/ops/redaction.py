"""What the service may say about a failure in its logs and answers: never Redis's address, commands or keys (a
redis-py error's text carries them: "Error 111 connecting to 10.0.0.5:6379", "Command # 1 (XADD hyperlift:... )"),
never a secret. The kind of failure and its class are enough to act on; Redis's own log has the rest."""

from __future__ import annotations

import redis


def redis_failure(exc: BaseException) -> str:
    """A Redis error as its kind and class, without its text, e.g. 'Redis timed out (TimeoutError)'."""
    if isinstance(exc, redis.exceptions.TimeoutError):
        kind = "timed out"
    elif isinstance(exc, redis.exceptions.ConnectionError):
        kind = "connection failed"
    elif isinstance(exc, redis.exceptions.ResponseError):
        kind = "refused the command"
    else:
        kind = "failed"
    return f"Redis {kind} ({type(exc).__name__})"
