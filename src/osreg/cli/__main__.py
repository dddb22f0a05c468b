"""``python -m osreg.cli``: the console script."""

from osreg.cli import run

run()
