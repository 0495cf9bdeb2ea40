"""The drain's receipts for the write-ahead files: which records of each writer are in the lake.

Every stream entry a trace writer sends carries, next to its `record`, a field `wal` = `<writer id>:<seq>:<floor>`.
The drain (serving/store/decision_log.py `StreamDrain`), once a batch is in parquet and acknowledged, notes the seqs
it saw per writer. `acked` is the highest seq up to which it has seen *every* seq of that writer: contiguity, not a
high-water mark, because a Redis that restarted from an older snapshot drops a run of entries in the middle of
the stream while later ones arrive; a maximum would tell the writer to delete records the lake never got.

The receipts are kept in the lake (`<root>/_wal_acks.<group>.json`, written atomically after each batch: they are
about the lake, and survive what Redis forgets) and published to Redis (`{<stream>}:wal_acks:<group>`, one hash field
per writer: {"acked", "seen", "gen"}), which the writers read about once a second:

- a writer deletes its segments up to `acked`;
- `seen > acked` means the drain saw records after a gap: the writer sends everything after `acked` again, once per
  drain generation `gen` (the lake keeps each decision_id once);
- `floor` in each entry is what the writer already knows to be in the lake (or damaged on its disk): a receipt
  lost with a Redis restart, or pruned after `RETENTION_S` without news from that writer, comes back from it.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import redis

log = logging.getLogger(__name__)

RETENTION_S = 30 * 86_400.0  # receipts of writers silent this long are pruned (their floor restores them)


def acks_key(stream: str, group: str) -> str:
    """Redis hash of the receipts of the drain group `group` for `stream` (on the stream's Redis Cluster slot)."""
    return f"{_slot_of(stream)}:wal_acks:{group}"


def writers_key(stream: str) -> str:
    """Redis hash where each trace writer publishes its counters (the reconciliation reads it); the stream's slot."""
    return f"{_slot_of(stream)}:wal_writers"


def _slot_of(stream: str) -> str:
    """A key prefix on `stream`'s Redis Cluster slot: the stream's own hash tag if it has one, else the whole name as
    the tag (`{hyperlift:decisions}` hashes like `hyperlift:decisions`). The writer sends its XADDs, receipt reads
    and counters over one connection to the stream's master, so the three keys must share its slot."""
    opened = stream.find("{")
    closed = stream.find("}", opened + 1) if opened >= 0 else -1
    if closed > opened + 1 or "}" in stream:  # tagged already (or braces that no tag of ours could wrap)
        return stream
    return f"{{{stream}}}"


def wal_field(writer_id: bytes, seq: int, floor: int) -> bytes:
    """The `wal` field of one stream entry."""
    return b"%s:%d:%d" % (writer_id, seq, floor)


def parse_wal_field(raw: bytes | str | None) -> tuple[str, int, int] | None:
    """(writer id, seq, floor) of a `wal` field; None when absent or malformed (such entries are not receipted)."""
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else raw
    writer, _, rest = text.partition(":")
    seq, _, floor = rest.partition(":")
    try:
        return writer, int(seq), int(floor or 0)
    except ValueError:
        return None


@dataclass
class WriterAcks:
    """One writer's receipt: every seq ≤ acked seen, plus disjoint ranges seen above it."""

    acked: int = 0
    ranges: list[list[int]] = field(default_factory=list)
    updated: float = 0.0

    def add(self, lo: int, hi: int) -> None:
        """Seqs lo..hi are in the lake."""
        if hi <= self.acked:
            return
        merged: list[list[int]] = []
        lo = max(lo, self.acked + 1)
        for a, b in self.ranges:
            if b + 1 < lo or hi + 1 < a:
                merged.append([a, b])
            else:
                lo, hi = min(lo, a), max(hi, b)
        merged.append([lo, hi])
        self.ranges = sorted(merged)
        self._advance()

    def raise_floor(self, floor: int) -> None:
        """Everything ≤ floor needs no receipt (the writer says so)."""
        if floor > self.acked:
            self.acked = floor
            self.ranges = [[max(a, floor + 1), b] for a, b in self.ranges if b > floor]
            self._advance()

    def _advance(self) -> None:
        while self.ranges and self.ranges[0][0] <= self.acked + 1:
            self.acked = max(self.acked, self.ranges.pop(0)[1])

    @property
    def seen(self) -> int:
        """The highest seq seen."""
        return self.ranges[-1][1] if self.ranges else self.acked

    @property
    def logged(self) -> int:
        """How many distinct seqs are in the lake."""
        return self.acked + sum(b - a + 1 for a, b in self.ranges)

    def merge(self, other: WriterAcks) -> None:
        """Union with a receipt written concurrently by another drain of the same group."""
        self.raise_floor(other.acked)
        for a, b in other.ranges:
            self.add(a, b)
        self.updated = max(self.updated, other.updated)


class WalAcks:
    """The receipts of one drain group over one lake folder."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.gen = 0
        self.writers: dict[str, WriterAcks] = {}
        self.changed = False
        if self.path.exists():
            self._load_into(self)

    def _load_into(self, target: WalAcks) -> None:
        state = json.loads(self.path.read_text())
        target.gen = max(target.gen, int(state.get("gen", 0)))
        for writer, body in state.get("writers", {}).items():
            ranges = [list(r) for r in body.get("ranges", [])]
            incoming = WriterAcks(int(body["acked"]), ranges, float(body.get("updated", 0)))
            if writer in target.writers:
                target.writers[writer].merge(incoming)
            else:
                target.writers[writer] = incoming

    def observe(self, entries: list[tuple[str, int, int]]) -> None:
        """Note (writer, seq, floor) of entries that are now in the lake."""
        now = time.time()
        by_writer: dict[str, list[int]] = {}
        for writer, seq, floor in entries:
            acks = self.writers.setdefault(writer, WriterAcks())
            acks.raise_floor(floor)
            acks.updated = now
            by_writer.setdefault(writer, []).append(seq)
        for writer, seqs in by_writer.items():
            seqs.sort()
            lo = prev = seqs[0]
            for seq in seqs[1:]:
                if seq > prev + 1:
                    self.writers[writer].add(lo, prev)
                    lo = seq
                prev = seq
            self.writers[writer].add(lo, prev)
        self.changed = self.changed or bool(entries)

    def save(self) -> None:
        """Write the receipts atomically (merged with what another drain of the group wrote meanwhile); prune
        writers silent for RETENTION_S."""
        if self.path.exists():
            self._load_into(self)
        cutoff = time.time() - RETENTION_S
        self.writers = {w: a for w, a in self.writers.items() if a.updated >= cutoff}
        state = {"gen": self.gen, "writers": {
            w: {"acked": a.acked, "ranges": a.ranges, "updated": a.updated} for w, a in sorted(self.writers.items())
        }}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "w") as handle:
                json.dump(state, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        self.changed = False

    def publish(self, client: redis.Redis, key: str) -> None:
        """Replace the Redis hash `key` with the receipts (one transaction), under a new generation."""
        self.gen += 1
        values = {w: json.dumps({"acked": a.acked, "seen": a.seen, "gen": self.gen}) for w, a in self.writers.items()}
        pipe = client.pipeline(transaction=True)
        pipe.delete(key)
        if values:
            pipe.hset(key, mapping=values)
        pipe.execute()
        self.save()  # the generation only moves forward, also across drains
