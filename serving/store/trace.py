"""The decision trace: one compact record per decision, on local disk first, then in a Redis Stream, kept on disk
until the lake has it.

A record holds no raw identifiers: the user is a keyed hash (`user_key`), the context a keyed hash. A request only
puts the record on a bounded in-process queue (and bumps a counter in a memory-mapped file); it never waits for the
log. The writer thread takes batches from the queue and, for each batch:

1. appends it to this process's write-ahead file (serving/store/wal.py; fsynced every `sync_interval_s`);
2. sends it to the stream (XADD, each entry with `wal` = writer:seq:floor next to `record`) when nothing older is
   waiting, else leaves it on disk ("spilled") and sends the backlog from disk, oldest first ("replayed"), as soon
   as Redis answers again;
3. about once a second reads the drain's receipts (serving/store/wal_acks.py) and deletes the segments whose
   records are all in the lake; checks Redis's run_id, and on a change (a restart, which may have lost what it had
   confirmed) sends everything the lake does not have yet again; when the drain reports a gap (records it saw
   after a hole), sends again from the hole; publishes its counters for the reconciliation.

Why a receipt from the drain and not from Redis: Redis's own durability is not enough (appendfsync everysec loses
the last second on a crash, a restart from an RDB snapshot loses minutes, a failover loses what the replica had not
received), and redis-server 6.2 has no WAITAOF to ask whether a write is on disk. The lake is where a record has to
be, so the lake says when a record may go. The cost is disk: records stay on disk until the drain has run
(`decision_log_sensor`, every 60 s by default), bounded by `max_bytes`, never an unbounded file. Over the budget
(the drain is late or stopped) the oldest segments Redis has confirmed are released before the lake has them: those
records fall back on Redis's durability (counted: `released_unconfirmed`, a metric to alert on). Only when nothing
on disk is in Redis yet (Redis down too) is a new batch dropped (`disk_budget`).

At start the writer adopts the folders of finished writers under the same root (a graceful restart, or a SIGKILL:
the kernel releases their lock either way), replays what the lake lacks and counts, from their counters file, the
records they had accepted but not yet written (`unwritten_at_exit`: a SIGKILL's loss). Those are the records that
arrived during the last `linger_s` and, at worst, one Redis call of this thread (bounded by its client's timeout,
150 ms in the service): 170 ms of decisions, below the fsync interval that bounds a power loss.
Resending can put a record in the stream twice: the drain keeps each decision_id once.

Drop reasons: `queue_full` (the writer thread fell `queue_size` records behind), `disk_budget`, `wal_error` (the
file could not be written: disk full, I/O error), `unwritten_at_exit`, `damaged_on_disk` (a segment line failed its
CRC).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hiredis
import orjson
import redis

from serving.ops.redaction import redis_failure
from serving.store.decision_log import DRAIN_GROUP
from serving.store.wal import COUNTER_SLOTS, WriterLog, leftovers
from serving.store.wal_acks import acks_key, wal_field, writers_key

log = logging.getLogger(__name__)

QUEUE_FULL, DISK_BUDGET, WAL_ERROR = "queue_full", "disk_budget", "wal_error"
UNWRITTEN_AT_EXIT, DAMAGED_ON_DISK = "unwritten_at_exit", "damaged_on_disk"
_OFFERED, _QUEUE_FULL, _DISK_BUDGET, _WAL_ERROR = (COUNTER_SLOTS.index(s) for s in COUNTER_SLOTS)
_RUN_ID = re.compile(rb"run_id:([0-9a-f]+)")


def encode(record: dict[str, Any]) -> bytes:
    """A record as JSON: numpy scalars as numbers, anything else unexpected as its str() (never an exception that
    would stop the writer thread); a NaN or infinite float becomes null."""
    return orjson.dumps(record, default=str, option=orjson.OPT_SERIALIZE_NUMPY)


@dataclass
class TraceStats:
    """What the writer did since it started (its Prometheus counters read these at scrape time)."""

    written: int = 0  # records appended to this process's write-ahead file
    sent: int = 0  # XADDs Redis confirmed, first sends and resends
    spilled: int = 0  # records that could not go to Redis at once and waited on disk
    replayed: int = 0  # records sent from disk: after a Redis failure or restart, a gap, or left by a finished process
    redis_failures: int = 0
    redis_restarts: int = 0  # run_id changes seen
    gap_resends: int = 0  # resends asked for by the drain's gap reports
    released_unconfirmed: int = 0  # deleted from disk (over the budget) after Redis, before the lake, confirmed them
    writer_errors: int = 0  # unexpected exceptions the writer thread survived (a bug; its records stay on disk)
    dropped: dict[str, int] = field(default_factory=dict)


class TraceWriter:
    """Queues decision records and moves them through the write-ahead file into `stream` (capped at about `maxlen`
    entries), keeping them on disk until the drain group `ack_group` has them in the lake."""

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        maxlen: int | None,
        wal_dir: Path,
        *,
        queue_size: int = 10_000,
        batch: int = 500,
        on_drop: Callable[[int], None] | None = None,
        linger_s: float = 0.02,
        sync_interval_s: float = 0.2,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 8 << 20,
        ack_group: str = DRAIN_GROUP,
        ack_poll_s: float = 1.0,
        retry_max_s: float = 1.0,
    ):
        self.client = client
        self.stream = stream
        self.maxlen = maxlen
        self.wal_dir = Path(wal_dir)
        self.batch = batch
        # Wait up to `linger_s` for more records before writing: one write and one round trip per batch instead of
        # one per decision (measured: ~1 ms of CPU per decision with one-record batches, 2.46 → ~1.5 ms in all).
        self.linger_s = linger_s
        self.sync_interval_s = sync_interval_s
        self.max_bytes = max_bytes
        self.ack_key = acks_key(stream, ack_group)
        self.writers_key = writers_key(stream)
        self.ack_poll_s = ack_poll_s
        self.retry_max_s = retry_max_s
        self.on_drop = on_drop or (lambda n: None)
        self.stats = TraceStats()
        self._stats_lock = threading.Lock()
        self._append_lock = threading.Lock()
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=queue_size)
        self._own = WriterLog.create(self.wal_dir, segment_bytes)
        self._counters = self._own.counters
        self._adopted = leftovers(self.wal_dir, segment_bytes)
        for wal in self._adopted:
            lost = wal.unwritten_at_exit()
            log.log(
                logging.WARNING if lost else logging.INFO,
                "decision log: adopted %s (records 1..%d, %d bytes on disk) from a process that has ended; %d "
                "record(s) it had accepted were never written (counted as dropped, %s)",
                wal.path, wal.last, wal.pending_bytes, lost, UNWRITTEN_AT_EXIT,
            )
            if lost:
                self._drop(lost, UNWRITTEN_AT_EXIT, f"left by {wal.writer_id}")
        # The writer thread's connection, taken from the client's pool at the first call and kept: redis-py's
        # get_connection/release cost ~100 µs of CPU per batch here (locks, a non-blocking read to check the idle
        # connection). Every call reads all of its replies, so the connection stays in step; on an error it is
        # disconnected and the next call reconnects it.
        self._connection: redis.connection.ConnectionInterface | None = None
        self._run_id: str | None = None  # the Redis server last seen (INFO server run_id)
        self._suspect = True  # check the run_id (and receipts) before the next send
        self._retry_at = 0.0
        self._backoff = 0.0
        self._outage_since: float | None = None
        self._poll_at = 0.0
        self._sync_at = 0.0
        self._close_deadline = 0.0
        self._closing = False  # the final counters say the process is gone
        self._thread = threading.Thread(target=self._run, name="decision-trace-writer", daemon=True)
        self._thread.start()

    # -- the request side --------------------------------------------------------------------------------------------

    def append(self, record: dict[str, Any]) -> None:
        """Queue one record; never blocks (a full queue drops the record and counts it)."""
        with self._append_lock:
            self._counters.add(_OFFERED)
            try:
                self._queue.put_nowait(record)
                return
            except queue.Full:
                self._counters.add(_QUEUE_FULL)
        self._drop(1, QUEUE_FULL, "the writer thread is behind")

    # -- waiting and stopping ----------------------------------------------------------------------------------------

    def flush(self, timeout_s: float = 5.0, wait_for_redis: bool = False) -> bool:
        """Wait until every record queued so far is on disk and in Redis; True then. False at the timeout, or, unless
        `wait_for_redis`, as soon as Redis refused after the call (the records are safe on disk and go when it
        answers; also at once while an outage is known)."""
        deadline = time.monotonic() + timeout_s
        failures = self.stats.redis_failures
        while time.monotonic() < deadline:
            queued = self._queue.unfinished_tasks
            if not queued and not self.unsent_records:
                return True
            if not queued and not wait_for_redis and (self.stats.redis_failures > failures or self._outage_since):
                return False
            time.sleep(0.002)
        return False

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued to disk, send what Redis takes within `timeout_s`, and stop; what is left stays on
        disk for the next process. The connection goes back to the client's pool."""
        self._close_deadline = time.monotonic() + timeout_s
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout_s + 2.0)
        if self._connection is not None and not self._thread.is_alive():
            self.client.connection_pool.release(self._connection)
            self._connection = None

    # -- what the metrics read ---------------------------------------------------------------------------------------

    @property
    def written(self) -> int:
        """Records written to this process's write-ahead file."""
        return self.stats.written

    @property
    def dropped(self) -> int:
        """Records dropped, every reason."""
        return sum(self.dropped_by_reason().values())

    @property
    def appended(self) -> int:
        """Records requests handed to this writer."""
        return self._counters.get("offered")

    def _logs(self) -> list[WriterLog]:
        return [self._own, *self._adopted]

    @property
    def pending_records(self) -> int:
        """Records on disk the lake does not have yet (this process's file and the adopted ones)."""
        return sum(wal.pending_records for wal in self._logs())

    @property
    def pending_bytes(self) -> int:
        """Bytes of write-ahead segments on disk."""
        return sum(wal.pending_bytes for wal in self._logs())

    @property
    def unsent_records(self) -> int:
        """Records on disk not yet confirmed by the current Redis server."""
        return sum(wal.unsent for wal in self._logs())

    def dropped_by_reason(self) -> dict[str, int]:
        """A copy of the drop counts."""
        with self._stats_lock:
            return dict(self.stats.dropped)

    def _drop(self, n: int, reason: str, detail: str) -> None:
        with self._stats_lock:
            self.stats.dropped[reason] = self.stats.dropped.get(reason, 0) + n
        self.on_drop(n)
        log.warning("%d decision record(s) dropped (%s: %s); %d so far", n, reason, detail, self.dropped)

    # -- the writer thread -------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                if self._step():
                    return
            except Exception:  # a bug must not stop the log silently: the queue would fill and drop everything
                with self._stats_lock:
                    self.stats.writer_errors += 1
                log.exception("decision-log writer: unexpected error; continuing in 1 s (records stay on disk)")
                time.sleep(1.0)

    def _step(self) -> bool:
        records, closing = self._take(self._idle_s())
        if records:
            self._write(records)
            for _ in records:
                self._queue.task_done()
        now = time.monotonic()
        if now >= self._sync_at:
            self._own.sync()
            self._sync_at = now + self.sync_interval_s
        if now >= self._poll_at and now >= self._retry_at:
            self._poll()
        if self.unsent_records and self._ready():
            self._send_backlog()
        if closing:
            self._finish()
            return True
        return False

    def _idle_s(self) -> float:
        """How long to wait for records: until the next sync, receipt poll or retry that is due."""
        now = time.monotonic()
        io_at = self._poll_at
        if self.unsent_records:
            io_at = now
        due = min(max(io_at, self._retry_at), self._sync_at)
        return min(max(due - now, 0.0), self.ack_poll_s)

    def _backlog_due(self) -> bool:
        return bool(self.unsent_records) and time.monotonic() >= self._retry_at

    def _take(self, timeout_s: float) -> tuple[list[dict[str, Any]], bool]:
        """A batch from the queue (after lingering for more), and whether close() was asked."""
        try:
            first = self._queue.get(timeout=timeout_s) if timeout_s > 0 else self._queue.get_nowait()
        except queue.Empty:
            return [], False
        if first is None:
            self._queue.task_done()
            return [], True
        records = [first]
        if self.linger_s and not self._backlog_due():
            time.sleep(self.linger_s)  # let a batch gather without waking this thread for every record
        while len(records) < self.batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.task_done()
                return records, True
            records.append(item)
        return records, False

    def _write(self, records: list[dict[str, Any]]) -> None:
        """Append a batch to the file; send it at once when nothing older waits and Redis is up, else leave it."""
        payloads = [encode(record) for record in records]
        n = len(payloads)
        size = sum(len(p) for p in payloads) + 40 * n
        if self.pending_bytes + size > self.max_bytes and not self._make_room(size):
            self._counters.add(_DISK_BUDGET, n)
            self._drop(n, DISK_BUDGET, f"{self.wal_dir} holds {self.pending_bytes} bytes Redis has not confirmed "
                                       f"(budget {self.max_bytes}); is Redis reachable?")
            return
        own = self._own
        direct = self._ready() and own.sent >= own.last  # _ready() first: it may learn of a restart (sent reset)
        try:
            first = own.append(payloads, {"sent": own.sent, "run_id": self._run_id})
        except OSError as exc:
            self._counters.add(_WAL_ERROR, n)
            self._drop(n, WAL_ERROR, f"cannot write {own.path}: {exc}; free disk space or fix the folder")
            return
        self.stats.written += n
        if direct and self._send(own, list(zip(range(first, first + n), payloads))):
            return
        self.stats.spilled += n

    def _make_room(self, size: int) -> bool:
        """Over the disk budget: release the oldest segments Redis has confirmed, before the lake has (the drain is
        late or stopped). Those records then rely on Redis's durability (counted, and logged once); new records are
        dropped only when nothing on disk is in Redis yet. True when a batch of `size` bytes fits now."""
        released = 0
        for wal in [*self._adopted, self._own]:  # the oldest records first
            over = self.pending_bytes + size - self.max_bytes
            if over <= 0:
                break
            released += wal.release_confirmed(over)
        if released:
            if not self.stats.released_unconfirmed:
                log.warning("decision log: %s is over its budget of %d bytes with records the lake has not "
                            "confirmed (is the drain running?): releasing the oldest ones Redis has; they rely on "
                            "Redis's durability now", self.wal_dir, self.max_bytes)
            self.stats.released_unconfirmed += released
        return self.pending_bytes + size <= self.max_bytes

    def _send_backlog(self) -> None:
        """Send one chunk of the oldest records Redis does not have (one per step, so new records keep flowing)."""
        for wal in self._logs():
            start = max(wal.sent, wal.floor())
            if start >= wal.last:
                continue
            lost_before = wal.lost_count()
            items = wal.read(start, self.batch, 1 << 20)  # ~1 MB per round trip: well inside the call's timeout
            if wal.lost_count() > lost_before:
                self._drop(wal.lost_count() - lost_before, DAMAGED_ON_DISK, f"see the errors about {wal.path}")
            if not items:  # everything after `start` is damaged
                wal.sent = wal.last
                continue
            if self._send(wal, items):
                self.stats.replayed += len(items)
            return

    def _send(self, wal: WriterLog, items: list[tuple[int, bytes]]) -> bool:
        """XADD each (seq, payload) with its `wal` field in one write; False (and back off) when Redis fails."""
        head = ("XADD", self.stream, *(("MAXLEN", "~", self.maxlen) if self.maxlen is not None else ()), "*")
        writer, floor = wal.writer_id.encode(), wal.floor()
        packed = b"".join([
            hiredis.pack_command((*head, "record", payload, "wal", wal_field(writer, seq, floor)))
            for seq, payload in items
        ])
        try:
            self._call(packed, len(items))
        except redis.exceptions.RedisError as exc:
            self._fail(exc)
            return False
        # Callers send what follows `sent` (a direct batch when nothing waits, or the backlog read from after it):
        # Redis now has everything up to the last item.
        wal.sent = max(wal.sent, items[-1][0])
        self.stats.sent += len(items)
        self._recovered()
        return True

    def _ready(self) -> bool:
        """May we talk to Redis now? After a failure (or at start) this first checks which server answers."""
        if time.monotonic() < self._retry_at:
            return False
        if self._suspect:
            return self._poll()
        return True

    def _poll(self) -> bool:
        """One round trip: the server's run_id, the drain's receipts for our logs, our counters for reconciliation."""
        logs = self._logs()
        stats = [item for wal in logs for item in (wal.writer_id, json.dumps(self._writer_stats(wal)))]
        packed = b"".join([
            hiredis.pack_command(("INFO", "server")),
            hiredis.pack_command(("HMGET", self.ack_key, *(wal.writer_id for wal in logs))),
            hiredis.pack_command(("HSET", self.writers_key, *stats)),
        ])
        try:
            info, receipts, _ = self._call(packed, 3)
        except redis.exceptions.RedisError as exc:
            self._fail(exc)
            return False
        match = _RUN_ID.search(info if isinstance(info, bytes) else str(info).encode())
        self._on_server(match.group(1).decode() if match else "unknown")
        for wal, raw in zip(logs, receipts):
            if raw is not None:
                self._on_receipt(wal, json.loads(raw))
        self._retire()
        self._suspect = False
        self._poll_at = time.monotonic() + self.ack_poll_s
        self._recovered()
        return True

    def _on_server(self, run_id: str) -> None:
        """A new Redis server (first contact, or a restart: it may have lost entries it had confirmed)."""
        if run_id == self._run_id:
            return
        previous, self._run_id = self._run_id, run_id
        for wal in self._logs():
            if previous is None and not wal.owned:  # an adopted log: its marker says what this server already has
                wal.sent = int(wal.marker.get("sent", 0)) if wal.marker.get("run_id") == run_id else 0
            elif previous is not None:
                wal.sent = 0  # everything after the lake's receipt goes again
        if previous is not None:
            self.stats.redis_restarts += 1
            log.warning("decision log: Redis restarted (run_id %s → %s); resending the %d record(s) the lake does "
                        "not have yet", previous, run_id, self.pending_records)

    def _on_receipt(self, wal: WriterLog, receipt: dict[str, int]) -> None:
        """Delete what the lake has; resend after a gap the drain reports (once per drain generation)."""
        acked = min(int(receipt["acked"]), wal.last)
        if acked > wal.acked:
            wal.acked = acked
            wal.release()
        if receipt["seen"] > receipt["acked"] and receipt["gen"] > wal.resent_gen and wal.sent > wal.floor():
            wal.resent_gen = receipt["gen"]
            wal.sent = 0
            self.stats.gap_resends += 1
            log.warning("decision log: the drain saw %s's records up to %d but not %d: resending from there",
                        wal.writer_id, receipt["seen"], receipt["acked"] + 1)

    def _retire(self) -> None:
        """Remove adopted folders whose records are all in the lake."""
        for wal in [w for w in self._adopted if w.done()]:
            wal.remove()
            self._adopted.remove(wal)

    def _writer_stats(self, wal: WriterLog) -> dict[str, Any]:
        """What the reconciliation needs to know of one log (serving/store/reconcile.py)."""
        c = wal.counters
        dropped = {QUEUE_FULL: c.get("queue_full"), DISK_BUDGET: c.get("disk_budget"), WAL_ERROR: c.get("wal_error"),
                   UNWRITTEN_AT_EXIT: 0 if wal.owned else wal.unwritten_at_exit(), DAMAGED_ON_DISK: wal.lost_count()}
        return {"appended": c.get("offered"), "written": wal.last, "pending": wal.pending_records,
                "dropped": {k: v for k, v in dropped.items() if v}, "released_unconfirmed": wal.released_count(),
                "live": wal.owned and not self._closing,
                "host": socket.gethostname(),
                "pid": os.getpid(), "updated": time.time()}

    def _fail(self, exc: redis.exceptions.RedisError) -> None:
        self.stats.redis_failures += 1
        self._backoff = min(self.retry_max_s, max(0.05, self._backoff * 2))
        self._retry_at = time.monotonic() + self._backoff
        self._suspect = True
        if self._connection is not None:
            self._connection.disconnect()
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning("decision log: %s; records stay in %s and go when it answers", redis_failure(exc), self.wal_dir)

    def _recovered(self) -> None:
        self._backoff = 0.0
        if self._outage_since is not None:
            log.warning("decision log: Redis answers again after %.1f s; %d record(s) to send from disk",
                        time.monotonic() - self._outage_since, self.unsent_records)
            self._outage_since = None

    def _call(self, packed: bytes, n: int) -> list[Any]:
        """One write of `n` packed commands, then their `n` replies, as RoundTrip.execute answers them: connection
        errors and timeouts raise redis-py's exceptions, an error reply is raised once every reply is read."""
        if self._connection is None:
            self._connection = self.client.connection_pool.get_connection()
        connection = self._connection
        connection.send_packed_command([packed])  # one sendall
        replies, refused = [], None
        for _ in range(n):
            try:
                replies.append(connection.read_response())
            except redis.exceptions.ResponseError as exc:
                refused = refused or exc
        if refused is not None:
            raise refused
        return replies

    def _finish(self) -> None:
        """At close: send what Redis takes before the deadline, mark what was sent, sync, release the folders."""
        while self.unsent_records and time.monotonic() < self._close_deadline:
            if self._ready():
                self._send_backlog()
            else:
                time.sleep(min(0.02, max(0.0, self._close_deadline - time.monotonic())))
        self._closing = True
        if time.monotonic() < self._close_deadline and self._ready():
            self._poll()  # the final counters, and receipts that may let the folders go now
        self._own.write_marker({"sent": self._own.sent, "run_id": self._run_id, "closed": True})
        for wal in self._logs():
            if wal.done():
                wal.remove()
            else:
                wal.close()
        self._adopted = []
        if self.unsent_records:
            log.warning("decision log: closed with %d record(s) not yet sent; the next process replays them from %s",
                        self.unsent_records, self.wal_dir)
