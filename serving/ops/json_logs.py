"""Structured logs: one JSON object per line, with the record's extra fields (decision_id, surface, ...)."""

from __future__ import annotations

import logging
import time

import orjson

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """ts, level, logger, message, then every `extra=` field of the record."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def configure(decisions: bool) -> None:
    """JSON lines on stderr for the service's loggers; per-decision lines only when `decisions`."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    for name in ("serving", "hyperlift.decisions"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel(logging.INFO)
    logging.getLogger("hyperlift.decisions").disabled = not decisions
    logging.Formatter.converter = time.gmtime
