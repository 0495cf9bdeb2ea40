"""One scrape for every uvicorn worker: each worker publishes its exposition to a shared folder, and a scrape of
any worker merges them (HYPERLIFT_SERVING_METRICS_DIR; `make serve WORKERS=n` sets it).

prometheus_client's own multiprocess mode keeps only counters, gauges and histograms in memory-mapped files: the
service's scrape-time collectors (the decision log's counters, the breaker, the model-info gauge, process and GC)
would be lost. Here every worker keeps its registry as it is and writes `generate_latest(registry)` to
`<dir>/<pid>.prom` (write to a temporary file, then rename: a reader never sees half a file) at most every
`interval_s` from a daemon thread, off the event loop. A scrape rewrites the scraped worker's own file first, reads
every file whose process is alive (a file of a process that is gone is deleted: its counters leave the sum, which
Prometheus takes as a counter reset), and merges them:

- counters, histograms (buckets, sums, counts) and summaries: summed across workers, sample by sample (same name
  and labels): the service's totals, as one process would count them;
- gauges, info and anything else: one series per worker, labelled `worker="<pid>"` (a sum would be meaningless
  for memory or file descriptors; `sum without (worker)` gives it where it is not).

A sibling's figures are at most `interval_s` old in a scrape (1 s by default); the scraped worker's are current.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

SUMMED_TYPES = frozenset({"counter", "histogram", "summary", "gaugehistogram"})
WORKER_LABEL = "worker"
SUFFIX = ".prom"


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists (signal 0: nothing is sent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def merge_expositions(texts: dict[str, str]) -> list[Metric]:
    """{worker: exposition text} → metric families: SUMMED_TYPES summed sample by sample, the rest per worker."""
    families: dict[str, Metric] = {}
    sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for worker, text in sorted(texts.items()):
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation, family.type)
                sums[family.name] = {}
            if family.type in SUMMED_TYPES:
                totals = sums[family.name]
                for sample in family.samples:
                    if sample.name.endswith("_created"):  # a timestamp, not a count (disabled here anyway)
                        continue
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    totals[key] = totals.get(key, 0.0) + sample.value
            else:
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, WORKER_LABEL: worker}, sample.value)
    for name, totals in sums.items():
        for (sample_name, labels), value in totals.items():  # in first-seen order: buckets stay ascending
            families[name].add_sample(sample_name, dict(labels), value)
    return list(families.values())


class _Merged:
    """A collector yielding already merged families (for generate_latest)."""

    def __init__(self, families: Iterable[Metric]):
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


class SharedExposition:
    """This worker's exposition in `folder`, refreshed every `interval_s`; `scrape()` gives every live worker's,
    merged (module docstring)."""

    def __init__(
        self, folder: Path, registry: CollectorRegistry, interval_s: float = 1.0, pid: int | None = None,
        alive: Callable[[int], bool] = process_alive, refresh: Callable[[], None] | None = None,
    ):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0 (seconds between a worker's writes); got {interval_s}")
        self.folder = Path(folder)
        self.registry = registry
        self.interval_s = interval_s
        self.pid = os.getpid() if pid is None else pid
        self.alive = alive
        self.refresh = refresh  # sets the gauges a scrape would set (breaker, safe mode) before each publish
        self.path = self.folder / f"{self.pid}{SUFFIX}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def publish(self) -> None:
        """Write this worker's exposition now (atomically)."""
        if self.refresh is not None:
            self.refresh()
        text = generate_latest(self.registry)
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{threading.get_ident()}.tmp")
            tmp.write_bytes(text)
            os.replace(tmp, self.path)

    def start(self) -> None:
        """Publish now, then every interval_s from a daemon thread."""
        self.publish()
        self._thread = threading.Thread(target=self._run, name="metrics-publisher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.publish()
            except OSError as error:  # a full or vanished folder: the scrape of this worker still answers
                log.warning("could not publish this worker's metrics to %s: %s", self.folder, error)

    def stop(self) -> None:
        """Stop publishing and remove this worker's file (its counters leave the sum, as when a worker dies)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.path.unlink(missing_ok=True)

    def scrape(self) -> bytes:
        """Every live worker's exposition merged, this worker's current (Prometheus text format)."""
        self.publish()
        texts: dict[str, str] = {}
        for path in sorted(self.folder.glob(f"*{SUFFIX}")):
            try:
                pid = int(path.stem)
            except ValueError:
                continue
            if pid != self.pid and not self.alive(pid):
                path.unlink(missing_ok=True)
                continue
            try:
                texts[str(pid)] = path.read_text()
            except FileNotFoundError:  # its worker stopped between the listing and the read
                continue
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Merged(merge_expositions(texts)))
        return generate_latest(registry)
