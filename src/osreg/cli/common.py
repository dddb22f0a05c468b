"""What the commands share: exit codes, error handling, common options, the pair config, progress, Dask."""

from __future__ import annotations

import functools
import logging
import os
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

def terminate(signum, frame):  # pragma: no cover - exercised by the kill test in a subprocess
    """SIGTERM ends the run like Ctrl-C: cleanup blocks run, so no partial output is left."""
    raise SystemExit(128 + signum)


def handle_errors(fn):
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


def parse_bands(value: str | None) -> tuple[int, ...] | None:
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
                     help="Matcher: cfog, rift, sift, aliked, disk, xfeat, tar, promptmid, cstf; options as "
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


def pair_config(method, model, sar_scale, despeckle, optical_bands, sar_band, threshold, seed, no_georef,
                no_border_mask, search_radius):
    """The :class:`~osreg.pipeline.RegisterConfig` of the pair options."""
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
        optical_bands=parse_bands(optical_bands),
        sar_band=sar_band,
        use_georeference=not no_georef,
        mask_borders=not no_border_mask,
    )


def default_data_dir() -> Path:
    from osreg.eval.datasets import default_data_dir

    return default_data_dir()


def split_methods(text: str) -> list[str]:
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


def progress_bars(desc: str, total: int):
    """The CLI's progress: a bar with ETA on stderr, silent with -q."""
    from tqdm import tqdm

    quiet = logging.getLogger().getEffectiveLevel() > logging.INFO
    return tqdm(total=total, desc=desc, file=sys.stderr, disable=quiet, dynamic_ncols=True, mininterval=1.0)


def dask_client(scheduler: str | None, workers: int = 2, threads: int = 1):
    """A client of the scheduler at ``scheduler``, or of a new LocalCluster of ``workers`` processes. How long a
    scheduler is tried is Dask's own setting ``distributed.comm.timeouts.connect`` (30 s unless configured, e.g.
    ``DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=10s``)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - dask[distributed] is a dependency
        raise InputError(f"dask.distributed is not installed: {exc}") from exc
    if scheduler:
        try:
            return Client(scheduler)
        except (OSError, TimeoutError) as exc:
            raise InputError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from exc
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
    return Client(cluster)
