"""Command line: ``osreg register``, ``match``, ``apply``, ``batch``, ``benchmark``, ``train``, ``methods``.

Conventions (after rasterio's ``rio``): ``-v/-q`` on the group (``osreg -q register ...``); every command writes
its output with ``-o/--out``; data go to files or stdout, logs to stderr; nothing is replaced without
``--overwrite``, and the output location is checked before any work. Exit codes: 0 success (including "no match"
for ``match``), 2 bad input, bad option or refused output, 3 registration not trustworthy, 1 anything unexpected.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import sys
from pathlib import Path

import click

from osreg.errors import (
    InputError,
    OsregError,
    OutputExistsError,
    RegistrationFailedError,
    WeightsNotFoundError,
)

logger = logging.getLogger("osreg")

EXIT_INPUT = 2
EXIT_UNTRUSTED = 3


def _terminate(signum, frame):  # pragma: no cover - exercised by the kill test in a subprocess
    """SIGTERM ends the run like Ctrl-C: cleanup blocks run, so no partial output is left."""
    raise SystemExit(128 + signum)


def _handle_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RegistrationFailedError as exc:
            click.echo(f"Registration failed: {'; '.join(exc.reasons)}", err=True)
            sys.exit(EXIT_UNTRUSTED)
        except (InputError, OutputExistsError, WeightsNotFoundError) as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(EXIT_INPUT)
        except (OsregError, OSError) as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)

    return wrapper


def _parse_bands(value: str | None) -> tuple[int, ...] | None:
    if not value:
        return None
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        msg = f"expected comma-separated 1-based band numbers such as 4,3,2, got {value!r}"
        raise click.BadParameter(msg) from None


def threads_option(fn):
    """``--threads``, set before any work (OpenCV now, torch when a method loads it)."""
    return click.option("--threads", type=click.IntRange(1, 256), default=min(4, os.cpu_count() or 1),
                        show_default=True, help="CPU threads for OpenCV and torch.")(fn)


def overwrite_option(fn):
    return click.option("--overwrite", is_flag=True, help="Replace existing outputs.")(fn)


def pair_options(fn):
    """Options of the commands that register one pair."""
    from osreg.geometry import MODELS
    from osreg.preprocess import DESPECKLE, SAR_SCALES

    opts = [
        click.argument("optical", type=click.Path(dir_okay=False, path_type=str)),
        click.argument("sar", type=click.Path(dir_okay=False, path_type=str)),
        click.option("--method", default="cfog", show_default=True,
                     help="Matcher: cfog, rift, sift, aliked, disk, xfeat, tar, promptmid; options as "
                          "name[key=value,...], e.g. promptmid[sar_prior=sar2sar] (`osreg methods` lists them)."),
        click.option("--model", type=click.Choice(("auto", *MODELS, "local")), default="auto", show_default=True,
                     help="Transform model: auto is affine for an image pair and, for a scene, the local model where "
                          "its tie points support it; local (a scene's smoothed displacement field) implies --scene."),
        click.option("--sar-scale", type=click.Choice(SAR_SCALES), default="auto", show_default=True,
                     help="How SAR values are encoded."),
        click.option("--despeckle", type=click.Choice(DESPECKLE), default="none", show_default=True,
                     help="SAR speckle filter before matching."),
        click.option("--optical-bands", default=None, help="1-based optical bands to use, e.g. 4,3,2."),
        click.option("--sar-band", type=click.IntRange(1), default=None, help="1-based SAR band to use."),
        click.option("--threshold", type=click.FloatRange(0.1), default=3.0, show_default=True,
                     help="Inlier threshold in pixels."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of the robust estimator."),
        click.option("--no-georef", is_flag=True, help="Ignore georeferencing and register in pixel space."),
        click.option("--no-border-mask", is_flag=True,
                     help="Keep edge-connected exact-zero borders of inputs without a nodata value as data "
                          "(by default they are masked, as GDAL's nearblack does)."),
        click.option("--search-radius", type=click.IntRange(4), default=None,
                     help="cfog only: largest shift searched (pixels at working resolution)."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _config(method, model, sar_scale, despeckle, optical_bands, sar_band, threshold, seed, no_georef, no_border_mask,
            search_radius):
    from osreg.geometry import GeometryConfig
    from osreg.matchers import parse_method_spec, resolve_method
    from osreg.pipeline import make_config
    from osreg.preprocess import PreprocessConfig

    model = "affine" if model in ("auto", "local") else model  # the plane model of a pair / a scene's global stage
    name, options = parse_method_spec(method)
    if search_radius is not None:
        if resolve_method(name) != "cfog":
            raise InputError(f"--search-radius applies to method cfog only, not {resolve_method(name)}")
        options["search_radius"] = search_radius
    return make_config(
        name,
        options,
        preprocess=PreprocessConfig(sar_scale=sar_scale, despeckle=despeckle),
        geometry=GeometryConfig(model=model, threshold_px=threshold, seed=seed),
        optical_bands=_parse_bands(optical_bands),
        sar_band=sar_band,
        use_georeference=not no_georef,
        mask_borders=not no_border_mask,
    )


def _default_data_dir() -> Path:
    from osreg.eval.datasets import default_data_dir

    return default_data_dir()


def _split_methods(text: str) -> list[str]:
    """Split "a,b[x=1,y=2],c" on the commas outside brackets."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [m for m in out if m.strip()]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (repeatable).")
@click.option("-q", "--quiet", count=True, help="Less log output (repeatable).")
@click.version_option(package_name="osreg")
def main(verbose: int, quiet: int) -> None:
    """osreg: register SAR images to optical images."""
    level = logging.INFO - 10 * verbose + 10 * quiet
    logging.basicConfig(level=max(level, logging.DEBUG), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger().setLevel(max(level, logging.DEBUG))


def progress_bars(desc: str, total: int):
    """The CLI's progress: a bar with ETA on stderr, silent with -q."""
    from tqdm import tqdm

    quiet = logging.getLogger().getEffectiveLevel() > logging.INFO
    return tqdm(total=total, desc=desc, file=sys.stderr, disable=quiet, dynamic_ncols=True, mininterval=1.0)


def scene_options(fn):
    """Options of a whole-scene registration."""
    opts = [
        click.option("--scene/--chip", "scene_mode", default=None,
                     help="Register as a scene (windowed, full resolution, local model) or as one image pair "
                          "[default: scene when the optical image's longest side exceeds 2048 px or --model local]."),
        click.option("--spacing", type=click.IntRange(64), default=512, show_default=True,
                     help="Scene: distance between tie-point windows (optical pixels)."),
        click.option("--window", "window_size", type=click.IntRange(128), default=320, show_default=True,
                     help="Scene: side of a tie-point window (optical pixels)."),
        click.option("--scheduler", default=None,
                     help="Scene: match the windows on this Dask scheduler (address, e.g. tcp://host:8786)."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _scene_config(model: str, spacing: int, window_size: int):
    from osreg.scene import SceneConfig

    return SceneConfig(model=model if model in ("auto", "local") else model, spacing=spacing, window=window_size)


def _use_scene(optical: str, model: str, scene_mode: bool | None) -> bool:
    from osreg.io.windows import RasterSource
    from osreg.scene import is_scene

    if scene_mode is not None:
        if not scene_mode and model == "local":
            raise InputError("--model local is a scene model: drop --chip")
        return scene_mode
    if model == "local":
        return True
    src = RasterSource.open(optical, "optical")
    return is_scene(src.width, src.height)


@main.command()
@pair_options
@scene_options
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=str),
              help="Output folder (new, empty, or holding an earlier run's outputs).")
@overwrite_option
@threads_option
@_handle_errors
def register(optical, sar, out_dir, overwrite, threads, scene_mode, spacing, window_size, scheduler, **kw):
    """Register SAR to OPTICAL and write the registered SAR, displacement field, tie points, report and quick-look
    to OUT.

    Large images are registered as scenes: a global stage on decimated copies, tie points in windows at full
    resolution, a local model where they support it, and outputs resampled block by block (the registered SAR as a
    Cloud-Optimised GeoTIFF). Exits with 3, writing the report (and tie points) but no registered image, when the
    result is not trustworthy. The outputs replace OUT as one set.
    """
    from osreg.export import OUTPUT_NAMES, write_outputs
    from osreg.io.atomic import check_output_folder
    from osreg.runtime import set_threads

    set_threads(threads)
    cfg = _config(**kw)
    check_output_folder(out_dir, OUTPUT_NAMES.values(), overwrite)  # refuse before the work, not after
    if _use_scene(optical, kw["model"], scene_mode):
        from osreg.scene.outputs import write_scene_outputs
        from osreg.scene.register import register_scene

        scene = _scene_config(kw["model"], spacing, window_size)
        client = _dask_client(scheduler) if scheduler else None
        try:
            reg = register_scene(optical, sar, cfg, scene, progress_bars, client)
        finally:
            if client is not None:
                client.close()
        written = write_scene_outputs(reg, out_dir, overwrite, progress_bars)
    else:
        from osreg.pipeline import run_registration

        reg = run_registration(optical, sar, cfg)
        written = write_outputs(reg, out_dir, overwrite)
    for kind, path in written.items():
        logger.info("wrote %s: %s", kind, path)
    if not reg.verdict.good:
        raise RegistrationFailedError(list(reg.verdict.reasons))
    click.echo(json.dumps({"verdict": "good", "report": written["report"], "registered": written["registered"]}))


def _dask_client(scheduler: str | None, workers: int = 2, threads: int = 1):
    """A client of the scheduler at ``scheduler``, or of a new LocalCluster of ``workers`` processes."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - dask[distributed] is a dependency
        raise InputError(f"dask.distributed is not installed: {exc}") from exc
    if scheduler:
        try:
            return Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise InputError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from exc
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
    return Client(cluster)


@main.command()
@click.argument("pairs_csv", type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Output folder: one folder per pair (as register writes it) and summary.csv.")
@click.option("--method", default="cfog", show_default=True, help="Matcher, as for register.")
@click.option("--model", type=click.Choice(("auto", "similarity", "affine", "homography", "local")), default="auto",
              show_default=True, help="Transform model, as for register.")
@click.option("--workers", type=click.IntRange(0), default=2, show_default=True,
              help="Worker processes of the local Dask cluster (0: no cluster, pairs in turn in this process).")
@click.option("--scheduler", default=None, help="Address of an existing Dask scheduler (instead of a local cluster).")
@click.option("--no-georef", is_flag=True, help="Ignore georeferencing and register in pixel space.")
@overwrite_option
@click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True,
              help="CPU threads per pair (per worker).")
@_handle_errors
def batch(pairs_csv, out_dir, method, model, workers, scheduler, no_georef, overwrite, threads):
    """Register every pair of PAIRS_CSV (columns optical,sar[,name]) on a Dask cluster.

    Each pair gets a folder in OUT as `register` writes it; summary.csv lists every pair's status. A re-run skips
    pairs whose folder holds a report (--overwrite redoes them); a pair whose worker dies is rescheduled.
    """
    from osreg.batch import read_pairs, run_batch
    from osreg.geometry import GeometryConfig
    from osreg.pipeline import make_config
    from osreg.scene import SceneConfig

    tasks = read_pairs(pairs_csv, out_dir)
    cfg = make_config(method, geometry=GeometryConfig(model="affine" if model in ("auto", "local") else model),
                      use_georeference=not no_georef)
    scene = SceneConfig(model=model)
    client = None if (workers == 0 and not scheduler) else _dask_client(scheduler, workers)
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


@main.command()
@click.argument("registration", type=click.Path(dir_okay=False, path_type=str))
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="The resampled raster (Cloud-Optimised GeoTIFF on the optical grid).")
@click.option("--bands", default=None, help="1-based bands of INPUT to resample (default: all).")
@overwrite_option
@threads_option
@_handle_errors
def apply(registration, input_path, out_path, bands, overwrite, threads):
    """Apply a finished registration to another band or product of the same SAR, without matching again.

    REGISTRATION is a displacement_field.tif or the report.json of a registration. In pixel space INPUT must be on
    the registered SAR's pixel grid; with a georeference it must be georeferenced (any grid or CRS).
    """
    from osreg.io.atomic import check_output_file
    from osreg.runtime import set_threads
    from osreg.scene.resample import apply_registration

    set_threads(threads)
    check_output_file(out_path, overwrite)
    path = apply_registration(registration, input_path, out_path, overwrite, _parse_bands(bands),
                              progress=progress_bars)
    click.echo(json.dumps({"written": str(path)}))


@main.command()
@pair_options
@click.option("-o", "--out", "out_path", default="-", show_default=True, type=click.Path(path_type=str),
              help="JSON file for the matches, or - for stdout.")
@overwrite_option
@threads_option
@_handle_errors
def match(optical, sar, out_path, overwrite, threads, **kw):
    """Match OPTICAL and SAR and write the correspondences as one JSON object.

    keypoints0 are optical pixels, keypoints1 SAR pixels (0-based, (0, 0) = centre of the top-left pixel), H maps
    optical to SAR pixels (null when not trusted); an empty list is a valid "no match" answer (exit 0).
    """
    from osreg.export import match_json
    from osreg.io.atomic import check_output_file, write_text_atomic
    from osreg.pipeline import run_registration
    from osreg.runtime import set_threads

    set_threads(threads)
    cfg = _config(**kw)
    if out_path != "-":
        check_output_file(out_path, overwrite)
    reg = run_registration(optical, sar, cfg)
    text = json.dumps(match_json(reg))
    if out_path == "-":
        click.echo(text)
    else:
        write_text_atomic(out_path, text + "\n", overwrite)
        logger.info("wrote %d matches to %s", len(reg.matches), out_path)


@main.command()
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=str),
              default=lambda: str(_default_data_dir()), show_default="$OSREG_DATA, else ../shared/data",
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
@_handle_errors
def benchmark(data_dir, datasets, methods, protocols, out_dir, crop, max_pairs, seed, model, split, volkov_gt,
              overwrite, threads):
    """Score matchers on datasets with ground truth; writes summary.md, per_pair.csv, summary.json and plots."""
    from osreg.eval.benchmark import BenchmarkConfig, run_benchmark
    from osreg.runtime import set_threads

    set_threads(threads)
    cfg = BenchmarkConfig(
        data_dir=data_dir,
        datasets=tuple(d.strip() for d in datasets.split(",") if d.strip()),
        methods=tuple(m.strip() for m in _split_methods(methods)),
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


@main.command()
@click.option("--method", type=click.Choice(["tar", "promptmid"]), default="tar", show_default=True,
              help="Model to train (promptmid: only its aggregator learns; the extractors stay frozen).")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=str),
              default=lambda: str(_default_data_dir()), show_default="$OSREG_DATA, else ../shared/data",
              help="Folder holding the datasets.")
@click.option("-o", "--out", "run_dir", required=True, type=click.Path(path_type=str),
              help="Run folder: checkpoints (last.pt), history.json, curves.png.")
@click.option("--preset", default="default", show_default=True, help="Model preset (PRESETS of the method's config module).")
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
@threads_option
@_handle_errors
def train(method, data_dir, run_dir, preset, steps, batch, lr, seed, blur, resume, init, train_only, fine_jitter,
          device, threads):
    """Train a learned matcher on the pairs of DATA (validation pairs held out, see osreg.train.data)."""
    from osreg.io.atomic import check_output_file
    from osreg.runtime import set_threads
    from osreg.train.common import TrainConfig

    if method == "promptmid":
        from osreg.train.train_promptmid import train as run_training
    else:
        from osreg.train.train_tar import train as run_training

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
                      fine_jitter=fine_jitter, augment=AugmentConfig(blur=blur), device=device)
    path = run_training(data_dir, run_dir, cfg, resume=resume, threads=threads)
    click.echo(str(path))


@main.command()
@click.argument("name", required=False)
@_handle_errors
def methods(name):
    """List the matchers: what each is, what it needs, and its options (with types and defaults).

    With NAME, only that method. Options are given as --method 'name[key=value,...]' (lists as a;b;c).
    """
    from osreg.matchers import available_methods, method_info, method_options

    names = [name] if name else available_methods()
    for n in names:
        info = method_info(n)
        opts = method_options(n)
        click.echo(f"{info.name}: {info.summary}")
        click.echo(f"  needs: {info.needs}")
        own = [o for o in opts if o.part == "matcher"]
        click.echo("  options: " + ", ".join(f"{o.name} ({o.type_name}) = {o.default!r}" for o in own))
        refine = "on" if info.template_refine is not None else "off"
        click.echo(f"  stages: search {info.search}, template_refine {refine}"
                   + (f" ({info.defaults_note})" if info.defaults_note else ""))
        if name:
            click.echo("  stage options: " + ", ".join(f"{o.name} ({o.type_name}) = {o.default!r}"
                                                        for o in opts if o.part != "matcher"))
    if not name:
        click.echo("\nstage options (every method): search (off, global, grid, auto; true = the method's own kind); "
                   "global search: global_coarse_side, global_rotation_step, global_min_scale, global_max_scale, "
                   "global_scales_per_octave, global_channels, global_min_overlap, global_candidates, "
                   "global_accept_inliers; grid search: rotations, scales, search_side, rectify_iterations, "
                   "accept_inliers, accept_ratio, prescreen_side, prescreen_keep; template_refine (bool); "
                   "template_radius, template_min_correction, template_passes, template_max_side. "
                   "`osreg methods NAME` shows their types and that method's defaults.")


def run() -> None:  # pragma: no cover - the console script; tests call main through click's runner
    """The ``osreg`` console script: SIGTERM ends a run like Ctrl-C (cleanup runs, no partial output is left)."""
    signal.signal(signal.SIGTERM, _terminate)
    main()


if __name__ == "__main__":  # pragma: no cover
    run()
