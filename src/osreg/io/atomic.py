"""Atomic, non-clobbering file output."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from osreg.errors import OutputExistsError


def check_can_write(paths: Iterable[str | os.PathLike], overwrite: bool) -> None:
    """Refuse early when an output exists and ``overwrite`` is false.

    Raises:
        OutputExistsError: naming every existing file.
    """
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"output already exists and would be replaced: {', '.join(existing)} (pass --overwrite to replace it)"
        )


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    A reader never sees a half-written file, and a failure leaves any earlier file untouched.

    Raises:
        OutputExistsError: if ``path`` exists and ``overwrite`` is false.
    """
    final = Path(path)
    check_can_write([final], overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part" + final.suffix, dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if final.exists() and not overwrite:  # appeared while we were writing
            raise OutputExistsError(f"output already exists and would be replaced: {final} (pass --overwrite)")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; outputs follow the user's umask
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | os.PathLike, text: str, overwrite: bool = False) -> None:
    """Write a text file atomically."""
    with atomic_output(path, overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
