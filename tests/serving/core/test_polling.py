"""The polling base of the champion watcher and the item index holder."""

import threading

from serving.core.polling import Poller


class Counting(Poller):
    def __init__(self, interval_s: float):
        super().__init__(interval_s, "counting")
        self.calls = 0
        self.called = threading.Event()

    def refresh(self) -> int:
        self.calls += 1
        if self.calls >= 3:
            self.called.set()
        return self.calls


def test_it_polls_until_stopped_and_not_at_all_with_a_zero_interval():
    poller = Counting(0.001)
    poller.start()
    assert poller.called.wait(30)  # bounded wait for the third call; no timing asserted
    poller.stop()
    calls = poller.calls
    assert calls >= 3 and not poller._thread.is_alive()
    idle = Counting(0)
    idle.start()
    idle.stop()
    assert idle.calls == 0 and idle._thread is None
