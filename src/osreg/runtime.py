"""Thread counts, set explicitly by the entry points (CLI, benchmark workers, batch workers)."""

from __future__ import annotations

import os
import sys


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
