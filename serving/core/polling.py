"""A daemon thread that calls `refresh()` every few seconds: the base of the champion watcher and the item index's."""

from __future__ import annotations

import threading


class Poller:
    """Calls `self.refresh()` every `interval_s` seconds in a daemon thread named `name` (not at all when 0) from
    `start()` until `stop()`. Subclasses define `refresh` and handle its errors (an exception ends the thread)."""

    def __init__(self, interval_s: float, name: str):
        self.interval_s = interval_s  # read at every wait: a change applies from the next one
        self.thread_name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> object:
        raise NotImplementedError

    def start(self) -> None:
        """Poll in a daemon thread every `interval_s` seconds (nothing when it is 0 or less)."""
        if self.interval_s <= 0:
            return
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.refresh()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop polling and wait for the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
