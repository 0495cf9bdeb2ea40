"""Admission control admits up to the limit, refuses beyond it without blocking, and frees slots on leave."""

import threading

import pytest

from serving.ops.admission import Admission


def test_admits_up_to_the_limit_then_refuses():
    gate = Admission(2)
    assert gate.try_enter() and gate.try_enter()
    assert not gate.try_enter()
    assert gate.in_flight == 2
    gate.leave()
    assert gate.try_enter()


def test_concurrent_entries_never_exceed_the_limit():
    gate = Admission(5)
    admitted = []
    barrier = threading.Barrier(16)

    def worker():
        barrier.wait()
        admitted.append(gate.try_enter())

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 5 and gate.in_flight == 5


def test_bad_limit_and_unbalanced_leave_are_errors():
    with pytest.raises(ValueError, match=">= 1"):
        Admission(0)
    with pytest.raises(RuntimeError, match="without a matching"):
        Admission(1).leave()
