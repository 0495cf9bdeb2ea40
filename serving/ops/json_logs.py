"""Structured logs: one JSON object per line, with the record's extra fields (decision_id, surface, ...)."""

from __future__ import annotations

import logging
import time

import orjson

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_LAYOUTS_KEPT = 256  # distinct attribute layouts remembered (one per call site's set of extra keys, in practice)


class JsonFormatter(logging.Formatter):
    """ts, level, logger, message, then every `extra=` field of the record."""

    def __init__(self) -> None:
        super().__init__()
        # A record's attributes in order → its extra fields in that order. Records of one call site share a layout
        # (LogRecord's own attributes, then the extras), so the ~25 attributes are filtered once per layout, not per
        # line (the service logs one line per decision).
        self._extras: dict[tuple[str, ...], tuple[str, ...]] = {}

    def format(self, record: logging.LogRecord) -> str:
        fields = record.__dict__
        layout = tuple(fields)
        extras = self._extras.get(layout)
        if extras is None:
            if len(self._extras) >= _LAYOUTS_KEPT:
                self._extras.clear()
            extras = self._extras[layout] = tuple(k for k in layout if k not in _STANDARD)
        entry = {
            "ts": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in extras:
            entry[key] = fields[key]
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode()


class JsonLinesHandler(logging.StreamHandler):
    """StreamHandler writing each line and flushing the stream under the lock `handle` already holds (StreamHandler's
    `emit` takes it a second time to flush)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = self.stream
            stream.write(self.format(record) + self.terminator)
            flush = getattr(stream, "flush", None)
            if flush is not None:
                flush()
        except RecursionError:  # as StreamHandler: see issue 36272
            raise
        except Exception:  # logging's own fallback, as StreamHandler.emit: handleError reports it on stderr
            self.handleError(record)


class AccessFields(logging.Filter):
    """uvicorn's access line as fields: its record's args are (client, method, path, HTTP version, status)."""

    FIELDS = ("client", "method", "path", "http_version", "status")

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == len(self.FIELDS):
            for name, value in zip(self.FIELDS, args):
                setattr(record, name, value)
        return True


UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def configure(decisions: bool) -> None:
    """JSON lines on stderr for the service's loggers and uvicorn's (its start-up, errors and access lines, the
    access line with client, method, path, http_version and status as fields), one format for every line a worker
    writes once the app has started; per-decision lines only when `decisions`. uvicorn's levels stay as its
    --log-level set them (and --no-access-log still silences the access lines)."""
    handler = JsonLinesHandler()
    handler.setFormatter(JsonFormatter())
    for name in ("serving", "hyperlift.decisions"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel(logging.INFO)
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
    access = logging.getLogger("uvicorn.access")
    access.filters[:] = [f for f in access.filters if not isinstance(f, AccessFields)] + [AccessFields()]
    logging.getLogger("hyperlift.decisions").disabled = not decisions
    logging.Formatter.converter = time.gmtime
    # No line of this format shows where it was logged from, or by which thread or process: skip collecting them for
    # every record (the logging HOWTO's "Optimization" switches; findCaller walks the stack for each decision line).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
