"""Atomic, non-clobbering output: single files, and sets of files that replace an output folder as a whole."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from osreg.errors import OutputExistsError, OutputLocationError

logger = logging.getLogger(__name__)


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


# -- output locations and output sets ---------------------------------------------------------------------------
STAGING_TAG = ".osreg-"  # hidden working folders beside an output folder: .NAME.osreg-new-PID-XXXX / -old-PID-XXXX


def _first_existing(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_creatable(p: Path, what: str) -> None:
    """``p`` (a file or folder to create, or replace) can be written: its nearest existing ancestor is a writable
    folder."""
    anc = _first_existing(p.parent)
    if not anc.is_dir():
        raise OutputLocationError(f"cannot create {what} {p}: {anc} is a file, not a folder")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise OutputLocationError(f"cannot write {what} {p}: folder {anc} is not writable")


def check_output_file(path: str | os.PathLike, overwrite: bool) -> None:
    """Check, before any work, that an output file can be written.

    Raises:
        OutputLocationError: the path is a folder, lies under a file, or its folder is not writable.
        OutputExistsError: it exists and ``overwrite`` is false.
    """
    p = Path(path)
    if p.is_dir():
        raise OutputLocationError(f"output file {p} is a folder; give the path of a file to write")
    _check_creatable(p, "output file")
    check_can_write([p], overwrite)


def check_output_folder(out_dir: str | os.PathLike, owned: Iterable[str], overwrite: bool) -> None:
    """Check, before any work, that an output folder can receive a set of outputs named ``owned``.

    The folder is osreg's: it must be new, empty, or hold only outputs of an earlier run (the set is replaced as a
    whole, so anything else in it would be lost).

    Raises:
        OutputLocationError: the path is a file, lies under a file, its parent is not writable, or it holds files
            osreg did not write.
        OutputExistsError: it holds outputs of an earlier run and ``overwrite`` is false.
    """
    p = Path(out_dir)
    if p.exists() and not p.is_dir():
        raise OutputLocationError(f"output folder {p} is a file; give the path of a folder")
    here = Path.cwd().resolve()
    if p.resolve() == here or p.resolve() in here.parents:
        raise OutputLocationError(f"output folder {p} is the current folder or holds it; its outputs replace the "
                                  "folder as a whole, so give a subfolder (e.g. -o out)")
    _check_creatable(p, "output folder")
    if not p.exists():
        return
    owned = set(owned)
    entries = sorted(e.name for e in p.iterdir())
    foreign = [e for e in entries if e not in owned]
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise OutputLocationError(
            f"output folder {p} holds files osreg did not write ({shown}); its outputs are replaced as one set, so "
            "give a new or empty folder")
    check_can_write([p / e for e in entries], overwrite)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale(final: Path) -> None:
    """Remove working folders left beside ``final`` by killed runs (their process is gone). A previous set moved
    aside by a run killed in the middle of a non-atomic swap is put back when ``final`` is missing."""
    prefix = f".{final.name}{STAGING_TAG}"
    for d in final.parent.glob(prefix + "*"):
        parts = d.name[len(prefix):].split("-")
        if len(parts) < 2 or not parts[1].isdigit() or _pid_alive(int(parts[1])):
            continue
        if parts[0] == "old" and not final.exists():
            os.replace(d, final)
            logger.warning("restored the outputs of an interrupted run to %s", final)
        else:
            shutil.rmtree(d, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def staged_folder(out_dir: str | os.PathLike, owned: Iterable[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden folder beside ``out_dir`` to write a set of outputs into; when the block succeeds, the set
    replaces ``out_dir`` as a whole (an atomic swap where the system has one), so a reader sees the earlier set or
    the new one, never a mix, and an earlier set never outlives a failed run beside new files. On failure or
    interruption nothing of the new set is left.

    Raises:
        OutputLocationError, OutputExistsError: see :func:`check_output_folder` (checked again at the start).
    """
    final = Path(out_dir).absolute()
    check_output_folder(final, owned, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(final)
    pid = os.getpid()
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}{STAGING_TAG}new-{pid}-", dir=final.parent))
    try:
        yield tmp
        check_output_folder(final, owned, overwrite)  # nothing appeared meanwhile that would be lost
        umask = os.umask(0)
        os.umask(umask)
        mode = stat.S_IMODE(final.stat().st_mode) if final.exists() else 0o777 & ~umask
        os.chmod(tmp, mode)  # mkdtemp makes 0700; the outputs follow the user's umask or the old folder's mode
        if not final.exists():
            os.rename(tmp, final)
        elif not _exchange(tmp, final):
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}{STAGING_TAG}old-{pid}-", dir=final.parent))
            os.rmdir(old)
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
