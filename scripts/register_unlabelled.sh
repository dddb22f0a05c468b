#!/usr/bin/env bash
# Register the shared pairs that have no ground truth, so that their accepted registrations can train the learned
# matchers (`osreg train --registered OUT/NAME/report.json ...`, osreg.train.data.load_registered):
#   ossift_xym2009 pair B (t2.tif optical, t1.tif SAR; ~1 m, 923 x 704 and 900 x 795 px),
#   rift_ljy_rs_noGT pair 1 (RIFT pair2.jpg optical, pair1.jpg SAR; 500 x 500) and
#   pair 2 (RIFT2 pair1.png optical, pair2.png SAR turned ~25 degrees; 256 x 256).
# None of them is among the benchmark's held-out pairs. Default options (CFOG with its rotation/scale search).
# Usage: scripts/register_unlabelled.sh [DATA (default ../shared/data)] [OUT (default runs/registered)]
# Inputs are passed as absolute paths: a report keeps them as given, and training reads them from there.
set -euo pipefail
DATA=$(realpath "${1:-../shared/data}")
OUT=${2:-runs/registered}
OSREG=${OSREG:-.venv/bin/osreg}
register() {  # name optical sar
    "$OSREG" -q register "$2" "$3" -o "$OUT/$1" --threads 2 || echo "$1: not accepted (see $OUT/$1/report.json)" >&2
}
register ossiftB "$DATA/ossift_xym2009/data/t2.tif" "$DATA/ossift_xym2009/data/t1.tif"
register rift1 "$DATA/rift_ljy_rs_noGT/RIFT_sar-optical/pair2.jpg" "$DATA/rift_ljy_rs_noGT/RIFT_sar-optical/pair1.jpg"
register rift2 "$DATA/rift_ljy_rs_noGT/RIFT2_sar-optical/pair1.png" "$DATA/rift_ljy_rs_noGT/RIFT2_sar-optical/pair2.png"
