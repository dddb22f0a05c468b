"""Thread counts and the ordered parallel map the search stages use."""

from __future__ import annotations

import sys
import threading
import time

import cv2
import pytest

from osreg.runtime import ordered_map, set_threads, thread_count, threads_each


def test_ordered_map_returns_a_serial_runs_results_in_order():
    def slow_first(n):  # the first items finish last
        time.sleep(0.02 * (5 - n) if n < 5 else 0)
        return n * n, threading.get_ident()

    for workers in (1, 2, 3):
        out = list(ordered_map(slow_first, range(8), workers))
        assert [v for v, _ in out] == [n * n for n in range(8)]
        threads = {t for _, t in out}
        assert (threads == {threading.get_ident()}) if workers == 1 else (threading.get_ident() not in threads)


def test_ordered_map_leaves_the_rest_unstarted_when_the_consumer_stops():
    """A search stops at its first confirmed candidate: with w workers at most w - 1 more items are started than a
    serial run would start, and none after the consumer stops."""
    for workers in (1, 2, 3):
        started = []
        lock = threading.Lock()

        def record(n):
            with lock:
                started.append(n)
            return n

        gen = ordered_map(record, range(100), workers)
        for n in gen:
            if n == 4:
                break
        gen.close()  # waits for the items already running
        assert sorted(started) == list(range(len(started)))
        assert 5 <= len(started) <= 5 + workers - 1, (workers, started)


def test_ordered_map_ahead_keeps_the_threads_busy_behind_a_slow_first_item():
    """The first item waits for the last one: with the default look-ahead (the workers) the last is only handed out
    after the first returns, so the first gives up; handing all out ahead lets the second thread run it meanwhile."""
    for ahead, last_ran_first in ((None, False), (8, True)):
        last_ran = threading.Event()

        def wait_for_last(n):
            if n == 0:
                return last_ran.wait(timeout=5.0 if last_ran_first else 0.2)
            if n == 7:
                last_ran.set()
            return n

        out = list(ordered_map(wait_for_last, range(8), 2, ahead=ahead))
        assert out == [last_ran_first, *range(1, 8)], ahead


def test_items_side_by_side_get_one_thread_each_and_a_lone_item_all():
    assert threads_each(4, 3) == threads_each(4, 2) == threads_each(1, 5) == 1
    assert threads_each(4, 1) == 4 and threads_each(2, 0) == 2


def test_ordered_map_raises_the_first_failure_in_order():
    def fail_at_3(n):
        if n == 3:
            raise ValueError("item 3")
        return n

    got = []
    with pytest.raises(ValueError, match="item 3"):
        for n in ordered_map(fail_at_3, range(10), 2):
            got.append(n)
    assert got == [0, 1, 2]


def test_thread_count_is_opencvs_which_set_threads_sets(monkeypatch):
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # set_threads sets them: restored after the test
        monkeypatch.setenv(var, "1")
    torch = sys.modules.get("torch")  # set_threads sets its threads when it is loaded
    before = cv2.getNumThreads(), torch.get_num_threads() if torch else 0
    try:
        for n in (1, 2):
            set_threads(n)
            assert thread_count() == n == cv2.getNumThreads()
    finally:
        cv2.setNumThreads(before[0])
        if torch:
            torch.set_num_threads(before[1])
