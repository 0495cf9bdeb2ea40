"""The decision log: every decision appended to a Redis Stream, drained to parquet for evaluation and training."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import redis

log = logging.getLogger(__name__)


class DecisionLog:
    """Appends decision records to a capped Redis Stream; a failed append is counted, never raised to the caller."""

    def __init__(self, client: redis.Redis, stream: str, maxlen: int):
        self.client = client
        self.stream = stream
        self.maxlen = maxlen
        self.failures = 0

    def append(self, record: dict[str, Any]) -> bool:
        """Append one record (as a JSON field); returns False if Redis refused it."""
        try:
            self.client.xadd(self.stream, {"record": json.dumps(record)}, maxlen=self.maxlen, approximate=True)
            return True
        except redis.exceptions.RedisError as exc:
            self.failures += 1
            log.warning("decision %s not logged (%s); failures so far: %d", record.get("decision_id"), exc, self.failures)
            return False


def drain_to_parquet(client: redis.Redis, stream: str, path: Path, batch: int = 10_000) -> int:
    """Read the whole stream into one parquet file (records in arrival order); returns the number of records."""
    records: list[dict[str, Any]] = []
    low = "-"
    while entries := client.xrange(stream, min=low, max="+", count=batch):
        records += [json.loads(fields[b"record"]) for _, fields in entries]
        low = "(" + entries[-1][0].decode()  # exclusive lower bound: continue after the last id read
    frame = pd.DataFrame.from_records(records)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return len(records)
