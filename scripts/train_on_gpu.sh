#!/usr/bin/env bash
# One command to continue TAR's training on a lent GPU machine (the `device` tool), inside its 15-minute budget.
#
# Prepare here, once per session (the training data and the packages the GPU image lacks travel with the tree;
# a call carries at most 64 MiB, so only volkov's 40 training pairs go, the optical as 8-bit luminance: 56 MB):
#   echo /.gpu/ >> .git/info/exclude
#   .venv/bin/python scripts/pack_volkov.py ../shared/data .gpu/data
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .gpu/whl \
#       rasterio affine cligj click-plugins
# Then run (device tool): command "bash scripts/train_on_gpu.sh", carry [".gpu", "runs/tar_long"], timeout 560 s.
# The checkpoint comes back in $OUT/last.pt; copy it to runs/tar_long/last.pt here and continue with --resume
# (on the CPU or the next GPU session).
#
# Not run in the session that wrote it (no GPU was lent): the training code's device path is tested on the CPU only.
set -euo pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src
STEPS=${STEPS:-20000}
RESUME=$([ -f runs/tar_long/last.pt ] && echo --resume || echo "--init src/osreg/matchers/tar/weights/tar.pt")
# stop before the call's limit; the last 100-step checkpoint is kept either way
timeout 480 python3 -m osreg.cli train --method tar --data .gpu/data -o runs/tar_long $RESUME --steps "$STEPS" \
    --batch 16 --device cuda --threads 8 || true
mkdir -p "$OUT" && cp runs/tar_long/last.pt runs/tar_long/history.json runs/tar_long/curves.png "$OUT"/
