"""Thread counts, set explicitly by the entry points (CLI, benchmark workers, batch workers)."""

from __future__ import annotations

import os
import sys
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Sized, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def set_threads(threads: int) -> None:
    """Use ``threads`` CPU threads in OpenCV, and in torch (now if it is loaded, else when it loads: torch reads
    ``OMP_NUM_THREADS`` at import). Never imports torch itself, so methods without it start light."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    import cv2

    cv2.setNumThreads(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def thread_count() -> int:
    """The thread count the entry points set (:func:`set_threads`; OpenCV holds it)."""
    import cv2

    return max(1, cv2.getNumThreads())


def threads_each(workers: int, items: int) -> int:
    """The threads each of ``items`` items may use when :func:`ordered_map` runs them on ``workers`` threads: one
    when several run side by side, all of them for a lone item."""
    return 1 if items > 1 else workers


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int, ahead: int | None = None) -> Iterator[R]:
    """``fn`` over ``items``, the results in the order of ``items``, on up to ``workers`` threads (numpy, SciPy's
    FFT and OpenCV release the GIL in their heavy parts); serial with one worker or one item. Lazily: a consumer
    that stops early leaves the rest unstarted (with threads, at most ``workers - 1`` more than it took have run;
    ``ahead - 1`` with ``ahead``, the items handed to the threads before the oldest one's result is taken: more than
    ``workers`` keeps every thread busy behind a slow item). The results are those of a serial run, for any ``fn``
    whose calls do not depend on each other; the first failure is raised where a serial run would raise it."""
    if workers <= 1 or (isinstance(items, Sized) and len(items) <= 1):
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending: deque[Future] = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= max(workers, ahead or 0):
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
