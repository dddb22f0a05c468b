"""Command line: ``osreg register``, ``match``, ``apply``, ``batch``, ``benchmark``, ``train``, ``methods``.

Conventions (after rasterio's ``rio``): ``-v/-q`` on the group (``osreg -q register ...``); every command writes
its output with ``-o/--out``; data go to files or stdout, logs to stderr; nothing is replaced without
``--overwrite``, and the output location is checked before any work. Exit codes: 0 success (including "no match"
for ``match``), 2 bad input, bad option or refused output, 3 registration not trustworthy, 1 anything unexpected.
"""

from __future__ import annotations

import logging
import signal
import sys

import click

from osreg.cli.common import split_methods, terminate
from osreg.cli.many import batch, benchmark, train
from osreg.cli.pair import apply, match, methods, register


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
    # dask's own loggers are chatty at INFO (every worker start and stop): shown from -vv on
    for name in ("distributed", "dask"):
        logging.getLogger(name).setLevel(max(level + 10, logging.DEBUG))


for _command in (register, match, apply, batch, benchmark, train, methods):
    main.add_command(_command)


def run() -> None:  # pragma: no cover - the console script; tests call main through click's runner
    """The ``osreg`` console script: SIGTERM ends a run like Ctrl-C (cleanup runs, no partial output is left)."""
    signal.signal(signal.SIGTERM, terminate)
    main()


__all__ = ["main", "run", "split_methods"]
