"""The commands on one pair: ``register`` (an image pair or a whole scene), ``match``, ``apply``, ``methods``."""

from __future__ import annotations

import json
import logging

import click

from osreg.cli.common import (
    dask_client,
    handle_errors,
    overwrite_option,
    pair_config,
    pair_options,
    parse_bands,
    progress_bars,
    threads_option,
)
from osreg.errors import InputError, RegistrationFailedError

logger = logging.getLogger("osreg")

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


def scene_config(model: str, spacing: int, window_size: int):
    from osreg.scene import SceneConfig

    return SceneConfig(model=model, spacing=spacing, window=window_size)


def use_scene(optical: str, model: str, scene_mode: bool | None) -> bool:
    from osreg.scene import registered_as_scene

    if scene_mode is not None:
        if not scene_mode and model == "local":
            raise InputError("--model local is a scene model: drop --chip")
        return scene_mode
    return registered_as_scene(optical, model)


@click.command()
@pair_options
@scene_options
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(path_type=str),
              help="Output folder (new, empty, or holding an earlier run's outputs).")
@click.option("--fuse", is_flag=True,
              help="Also write fused.tif: the optical bands and the registered SAR as one multi-band COG on the "
                   "optical grid (the stack for a detector or a classifier).")
@overwrite_option
@threads_option
@handle_errors
def register(optical, sar, out_dir, overwrite, threads, scene_mode, spacing, window_size, scheduler, fuse, **kw):
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
    cfg = pair_config(**kw)
    check_output_folder(out_dir, OUTPUT_NAMES.values(), overwrite)  # refuse before the work, not after
    if use_scene(optical, kw["model"], scene_mode):
        from osreg.scene.outputs import write_scene_outputs
        from osreg.scene.register import register_scene

        scene = scene_config(kw["model"], spacing, window_size)
        client = dask_client(scheduler) if scheduler else None
        try:
            reg = register_scene(optical, sar, cfg, scene, progress_bars, client)
        finally:
            if client is not None:
                client.close()
        written = write_scene_outputs(reg, out_dir, overwrite, progress_bars, fuse)
    else:
        from osreg.pipeline import run_registration

        reg = run_registration(optical, sar, cfg)
        written = write_outputs(reg, out_dir, overwrite, fuse)
    for kind, path in written.items():
        logger.info("wrote %s: %s", kind, path)
    if not reg.verdict.good:
        raise RegistrationFailedError(list(reg.verdict.reasons))
    click.echo(json.dumps({"verdict": "good", "report": written["report"], "registered": written["registered"]}))


@click.command()
@pair_options
@scene_options
@click.option("-o", "--out", "out_path", default="-", show_default=True, type=click.Path(path_type=str),
              help="JSON file for the matches, or - for stdout.")
@overwrite_option
@threads_option
@handle_errors
def match(optical, sar, out_path, overwrite, threads, scene_mode, spacing, window_size, scheduler, **kw):
    """Match OPTICAL and SAR and write the correspondences as one JSON object.

    keypoints0 are optical pixels, keypoints1 SAR pixels (0-based, (0, 0) = centre of the top-left pixel), H maps
    optical to SAR pixels (null when not trusted); an empty list is a valid "no match" answer (exit 0). For a scene
    the matches are those of its tie-point windows and H is its global stage's transform.
    """
    from osreg.io.atomic import check_output_file, write_text_atomic
    from osreg.runtime import set_threads

    set_threads(threads)
    cfg = pair_config(**kw)
    if out_path != "-":
        check_output_file(out_path, overwrite)
    if use_scene(optical, kw["model"], scene_mode):
        from osreg.scene.outputs import scene_match_json
        from osreg.scene.register import register_scene

        client = dask_client(scheduler) if scheduler else None
        try:
            reg = register_scene(optical, sar, cfg, scene_config(kw["model"], spacing, window_size), progress_bars,
                                 client)
        finally:
            if client is not None:
                client.close()
        text = json.dumps(scene_match_json(reg))
    else:
        from osreg.export import match_json
        from osreg.pipeline import run_registration

        reg = run_registration(optical, sar, cfg)
        text = json.dumps(match_json(reg))
    if out_path == "-":
        click.echo(text)
    else:
        write_text_atomic(out_path, text + "\n", overwrite)
        logger.info("wrote %d matches to %s", len(reg.matches), out_path)


@click.command()
@click.argument("registration", type=click.Path(dir_okay=False, path_type=str))
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False, path_type=str))
@click.option("-o", "--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="The resampled raster (Cloud-Optimised GeoTIFF on the optical grid).")
@click.option("--bands", default=None, help="1-based bands of INPUT to resample (default: all).")
@overwrite_option
@threads_option
@handle_errors
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
    path = apply_registration(registration, input_path, out_path, overwrite, parse_bands(bands),
                              progress=progress_bars)
    click.echo(json.dumps({"written": str(path)}))


@click.command()
@click.argument("name", required=False)
@handle_errors
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
