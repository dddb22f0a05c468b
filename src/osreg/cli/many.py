"""The commands on many pairs: ``batch`` (on Dask), ``benchmark``, ``train``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from osreg.cli.common import (
    dask_client,
    default_data_dir,
    handle_errors,
    overwrite_option,
    progress_bars,
    split_methods,
    threads_option,
)
from osreg.errors import InputError, OutputExistsError

logger = logging.getLogger("osreg")

@click.command()
@click.argument("pairs_csv", type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Output folder: one folder per pair (as register writes it) and summary.csv.")
@click.option("--method", default="cfog", show_default=True, help="Matcher, as for register.")
@click.option("--model", type=click.Choice(("auto", "similarity", "affine", "homography", "local")), default="auto",
              show_default=True, help="Transform model, as for register.")
@click.option("--workers", type=click.IntRange(0), default=2, show_default=True,
              help="Worker processes of the local Dask cluster (0: no cluster, pairs in turn in this process).")
@click.option("--scheduler", default=None,
              help="Address of an existing Dask scheduler (instead of a local cluster); tried for Dask's "
                   "distributed.comm.timeouts.connect (30 s unless configured).")
@click.option("--no-georef", is_flag=True, help="Ignore georeferencing and register in pixel space.")
@overwrite_option
@click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True,
              help="CPU threads per pair (per worker).")
@handle_errors
def batch(pairs_csv, out_dir, method, model, workers, scheduler, no_georef, overwrite, threads):
    """Register every pair of PAIRS_CSV (columns optical,sar[,name]) on a Dask cluster.

    Each pair gets a folder in OUT as `register` writes it; summary.csv lists every pair's status. A re-run skips
    pairs whose folder holds a report (--overwrite redoes them); a pair whose worker dies is rescheduled.
    """
    from osreg.batch import finished, read_pairs, run_batch
    from osreg.geometry import GeometryConfig
    from osreg.pipeline import make_config
    from osreg.scene import SceneConfig

    tasks = read_pairs(pairs_csv, out_dir)
    if not overwrite and all(finished(t) for t in tasks):
        workers, scheduler = 0, None  # nothing to run: no cluster to start
    cfg = make_config(method, geometry=GeometryConfig(model="affine" if model in ("auto", "local") else model),
                      use_georeference=not no_georef)
    scene = SceneConfig(model=model)
    client = None if (workers == 0 and not scheduler) else dask_client(scheduler, workers)
    try:
        rows = run_batch(tasks, out_dir, cfg, scene, client, overwrite, threads, progress_bars)
    finally:
        if client is not None:
            cluster = client.cluster
            client.close()
            if cluster is not None:
                cluster.close()
    counts = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    click.echo(json.dumps({"summary": str(Path(out_dir) / "summary.csv"), "pairs": len(rows), **counts}))


@click.command()
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=str),
              default=lambda: str(default_data_dir()), show_default="$OSREG_DATA, else ../shared/data",
              help="Folder holding the benchmark datasets.")
@click.option("--datasets", default="volkov_s1s2_10m,osmnet_zhanghan9718", show_default=True,
              help="Comma-separated dataset folders to use.")
@click.option("--methods", default="sift,aliked,disk,xfeat,cfog,rift", show_default=True,
              help="Comma-separated matchers; options as name[key=value,...], e.g. tar[use_text=false].")
@click.option("--protocol", "protocols", default="aligned,large-deformation", show_default=True,
              help="Comma-separated: aligned, paper (the TAR paper's deformation: rotation +-35 deg, scale 0.7-1.3, "
                   "shift +-10 %), large-deformation (full circle, scale 0.5-2), self-check (the optical itself "
                   "as the SAR, deformed as large-deformation).")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=str),
              help="Report folder (summary.md, per_pair.csv, summary.json, plot).")
@click.option("--crop", type=click.IntRange(0), default=512, show_default=True,
              help="Centre crop side for larger images (0 = full images).")
@click.option("--max-pairs", type=click.IntRange(0), default=0,
              help="Use at most this many pairs per dataset (0 = all).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the deformations and estimators.")
@click.option("--model", type=click.Choice(["similarity", "affine", "homography"]), default="affine", show_default=True)
@click.option("--split", type=click.Choice(["all", "val", "train"]), default="all", show_default=True,
              help="val: only the pairs held out from training (volkov's fixed 15 %; other datasets whole); "
                   "train: only the volkov pairs the shipped models were trained on (for tuning inference settings).")
@click.option("--volkov-gt", type=click.Choice(["identity", "checked"]), default="identity", show_default=True,
              help="volkov ground truth: the dataset's identity claim, or corrected by its independent alignment "
                   "check where that check is consistent.")
@overwrite_option
@threads_option
@handle_errors
def benchmark(data_dir, datasets, methods, protocols, out_dir, crop, max_pairs, seed, model, split, volkov_gt,
              overwrite, threads):
    """Score matchers on datasets with ground truth; writes summary.md, per_pair.csv, summary.json and plots."""
    from osreg.eval.benchmark import BenchmarkConfig, run_benchmark
    from osreg.runtime import set_threads

    set_threads(threads)
    cfg = BenchmarkConfig(
        data_dir=data_dir,
        datasets=tuple(d.strip() for d in datasets.split(",") if d.strip()),
        methods=tuple(m.strip() for m in split_methods(methods)),
        protocols=tuple(p.strip() for p in protocols.split(",") if p.strip()),
        crop=crop,
        max_pairs=max_pairs,
        seed=seed,
        model=model,
        threads=threads,
        split=split,
        volkov_gt=volkov_gt,
    )
    written = run_benchmark(cfg, out_dir, overwrite=overwrite, progress=True)
    click.echo(Path(written["summary_md"]).read_text())


@click.command()
@click.option("--method", type=click.Choice(["tar", "promptmid", "cstf"]), default="tar", show_default=True,
              help="Model to train (promptmid: only its aggregator learns; the extractors stay frozen).")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=str),
              default=lambda: str(default_data_dir()), show_default="$OSREG_DATA, else ../shared/data",
              help="Folder holding the datasets.")
@click.option("-o", "--out", "run_dir", required=True, type=click.Path(path_type=str),
              help="Run folder: checkpoints (last.pt), history.json, curves.png.")
@click.option("--preset", default="default", show_default=True,
              help="Model preset (PRESETS of the method's config module).")
@click.option("--steps", type=click.IntRange(1), default=3000, show_default=True)
@click.option("--batch", type=click.IntRange(1), default=4, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--blur", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Largest sigma (px) of the random Gaussian blur augmentation (0: none).")
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt.")
@click.option("--init", "init", type=click.Path(dir_okay=False, exists=True, path_type=str), default=None,
              help="TAR: start from this checkpoint's weights (modules the preset adds start fresh).")
@click.option("--train-only", type=click.Choice(["all", "fine"]), default="all", show_default=True,
              help="TAR: fine trains only the fine stage (everything else frozen) with the fine loss.")
@click.option("--fine-jitter", type=click.IntRange(0), default=0, show_default=True,
              help="TAR: move fine windows by up to this many fine pixels (offsets of a coarse match one cell off).")
@click.option("--device", default="cpu", show_default=True, help="cpu, or cuda[:N] on a machine with a GPU.")
@click.option("--registered", "registered", multiple=True,
              type=click.Path(dir_okay=False, exists=True, path_type=str),
              help="TAR, PromptMID: the report.json of a pair osreg registered and accepted; the pair trains too "
                   "(coarse loss only), with that registration as its ground truth. Repeatable.")
@click.option("--registered-share", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.25,
              show_default=True, help="Share of the samples drawn from the --registered pairs.")
@threads_option
@handle_errors
def train(method, data_dir, run_dir, preset, steps, batch, lr, seed, blur, resume, init, train_only, fine_jitter,
          device, registered, registered_share, threads):
    """Train a learned matcher on the pairs of DATA (validation pairs held out, see osreg.train.data)."""
    from osreg.io.atomic import check_output_file
    from osreg.runtime import set_threads
    from osreg.train.common import TrainConfig

    if method == "promptmid":
        from osreg.train.train_promptmid import train as run_training
    elif method == "cstf":
        from osreg.train.train_cstf import train as run_training
    else:
        from osreg.train.train_tar import train as run_training
    if init and method != "tar":
        raise InputError(f"--init applies to tar only, not {method}")

    from osreg.matchers.checkpoint import read_checkpoint

    set_threads(threads)
    last = Path(run_dir) / "last.pt"
    if last.exists() and not resume:
        raise OutputExistsError(f"{last} exists: pass --resume to continue that run, or choose another --out")
    check_output_file(last, overwrite=True)
    # checkpoints are read safely (weights_only) and checked before the data are loaded
    if resume and last.exists():
        read_checkpoint(last, "training", ("optimizer", "step", "history"))
    if init:
        read_checkpoint(init, "TAR", ("model",))  # what osreg.train.train_tar.initialise reads
    from osreg.train.data import AugmentConfig

    cfg = TrainConfig(preset=preset, steps=steps, batch=batch, lr=lr, seed=seed, init=init or "", train_only=train_only,
                      fine_jitter=fine_jitter, augment=AugmentConfig(blur=blur), device=device,
                      registered=tuple(str(Path(r).resolve()) for r in registered), registered_share=registered_share)
    path = run_training(data_dir, run_dir, cfg, resume=resume, threads=threads)
    click.echo(str(path))
