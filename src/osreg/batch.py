"""Many pairs on ``dask.distributed``: one output folder per pair, as ``osreg register`` writes it, and a summary.

Each pair is one task (:func:`register_pair`) that reads its files, registers them (as a pair or as a scene, by
the same rule as ``register``) and writes its folder as one set, so a task that dies half-way leaves nothing, and
a task that runs twice writes the same result. Dask reschedules the tasks of a worker that dies; an exception is
retried (``retries``); a bad input is an answer (status ``error``), not a retry. A re-run skips pairs whose folder
already holds a report unless ``overwrite``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from osreg.errors import InputError, OsregError
from osreg.io.atomic import write_text_atomic
from osreg.pipeline import RegisterConfig
from osreg.progress import ProgressFactory, silent
from osreg.scene.config import SceneConfig

logger = logging.getLogger(__name__)

SUMMARY_COLUMNS = ("name", "status", "verdict", "failed_checks", "model", "matches", "inliers", "seconds", "optical",
                   "sar", "folder", "message")


@dataclass(frozen=True)
class PairTask:
    """One pair of a batch: its name (the output folder's), its files, and where its outputs go."""

    name: str
    optical: str
    sar: str
    out_dir: str


def read_pairs(csv_path: str | Path, out_dir: str | Path) -> list[PairTask]:
    """The pairs of a CSV with columns ``optical,sar[,name]`` (relative paths are relative to the CSV's folder;
    the name defaults to the optical file's stem).

    Raises:
        InputError: missing file or columns, an empty list, a duplicate name, a name that is not a folder name.
    """
    p = Path(csv_path)
    if not p.is_file():
        raise InputError(f"pairs file not found: {p}")
    rows = list(csv.DictReader(io.StringIO(p.read_text(encoding="utf-8-sig"))))
    if not rows:
        raise InputError(f"{p} lists no pairs (expected a header optical,sar[,name] and one row per pair)")
    missing = [c for c in ("optical", "sar") if c not in rows[0]]
    if missing:
        raise InputError(f"{p} has no column {missing[0]!r}; expected columns optical,sar[,name], got "
                         f"{','.join(rows[0])}")
    tasks, seen = [], {}
    for line, row in enumerate(rows, start=2):
        opt, sar = (row.get("optical") or "").strip(), (row.get("sar") or "").strip()
        if not opt or not sar:
            raise InputError(f"{p} line {line}: both optical and sar are needed")
        name = (row.get("name") or "").strip() or Path(opt).stem
        if "/" in name or name in (".", "..") or name.startswith("."):
            raise InputError(f"{p} line {line}: pair name {name!r} cannot be a folder name")
        if name in seen:
            raise InputError(f"{p} line {line}: pair name {name!r} already used on line {seen[name]} (add a name "
                             "column to tell them apart)")
        seen[name] = line
        tasks.append(PairTask(name, str((p.parent / opt).resolve()), str((p.parent / sar).resolve()),
                              str(Path(out_dir) / name)))
    return tasks


def _row(task: PairTask, status: str, report: dict[str, Any] | None, seconds: float, message: str = ""
         ) -> dict[str, Any]:
    report = report or {}
    return {"name": task.name, "status": status, "verdict": report.get("verdict", ""),
            "failed_checks": ";".join(report.get("failed_checks", [])), "model": report.get("model", ""),
            "matches": report.get("matches", ""), "inliers": report.get("inliers", ""), "seconds": round(seconds, 2),
            "optical": task.optical, "sar": task.sar, "folder": task.out_dir, "message": message}


def _report(task: PairTask) -> dict[str, Any] | None:
    path = Path(task.out_dir) / "report.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def register_pair(task: PairTask, config: RegisterConfig, scene: SceneConfig, overwrite: bool = False,
                  threads: int = 1) -> dict[str, Any]:
    """Register one pair into its folder; returns its summary row. Bad inputs give status ``error``."""
    from osreg.export import write_outputs
    from osreg.runtime import set_threads
    from osreg.scene import registered_as_scene

    set_threads(threads)
    t = time.perf_counter()
    try:
        if registered_as_scene(task.optical, scene.model):
            from osreg.scene.outputs import write_scene_outputs
            from osreg.scene.register import register_scene

            write_scene_outputs(register_scene(task.optical, task.sar, config, scene), task.out_dir, overwrite)
        else:
            from osreg.pipeline import run_registration

            write_outputs(run_registration(task.optical, task.sar, config), task.out_dir, overwrite)
    except (InputError, OsregError) as exc:
        return _row(task, "error", None, time.perf_counter() - t, str(exc))
    report = _report(task)
    status = "good" if report and report.get("verdict") == "good" else "failed"
    return _row(task, status, report, time.perf_counter() - t)


def finished(task: PairTask) -> bool:
    """Whether a pair's folder already holds a report (a finished registration, trusted or not)."""
    return _report(task) is not None


PairRunner = Callable[[PairTask, RegisterConfig, SceneConfig, bool, int], dict[str, Any]]


def run_batch(tasks: list[PairTask], out_dir: str | Path, config: RegisterConfig, scene: SceneConfig = SceneConfig(),
              client=None, overwrite: bool = False, threads: int = 1, progress: ProgressFactory = silent,
              runner: PairRunner = register_pair, retries: int = 2) -> list[dict[str, Any]]:
    """Register every pair (on the Dask cluster of ``client``, or here in turn when None) and write
    ``summary.csv`` in ``out_dir``; pairs whose folder holds a report are skipped unless ``overwrite``.

    Returns the summary rows in the order of ``tasks``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, Any]] = {}
    todo = []
    for task in tasks:
        report = None if overwrite else _report(task)
        if report is not None:
            rows[task.name] = _row(task, "done before", report, 0.0, "skipped: folder holds a report (--overwrite "
                                                                     "to redo)")
        else:
            todo.append(task)
    logger.info("%d pair(s) to register, %d done before", len(todo), len(tasks) - len(todo))
    bar = progress("pairs", len(todo))
    try:
        if client is None:
            for task in todo:
                rows[task.name] = runner(task, config, scene, overwrite, threads)
                bar.update(1)
        else:
            from distributed import as_completed

            futures = {client.submit(runner, task, config, scene, overwrite, threads, key=f"osreg-pair-{task.name}"
                                     f"-{time.time_ns()}", pure=False, retries=retries): task for task in todo}
            for fut in as_completed(futures):
                task = futures[fut]
                try:
                    rows[task.name] = fut.result()
                except Exception as exc:  # a worker died too often, or a bug: this pair fails, the others go on
                    logger.error("pair %s failed: %s", task.name, exc)
                    rows[task.name] = _row(task, "error", None, 0.0, f"{type(exc).__name__}: {exc}")
                bar.update(1)
    finally:
        bar.close()
    ordered = [rows[t.name] for t in tasks]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(ordered)
    write_text_atomic(out / "summary.csv", buf.getvalue(), overwrite=True)
    return ordered


__all__ = ["PairTask", "SUMMARY_COLUMNS", "read_pairs", "register_pair", "run_batch"]
