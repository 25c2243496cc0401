#!/usr/bin/env bash
# Train three fixed runs with the code of a source tree and print the sha256 of each run's
# db_codes.npy, so two trees (e.g. before and after a refactor) can be compared byte for byte:
#
#   git worktree add /tmp/before <commit>
#   benchmarks/same_bytes.sh /tmp/before /tmp/out-before
#   benchmarks/same_bytes.sh . /tmp/out-after        # then compare the two lists
#
# Runs: AHCL and DPSH on synthetic scenes (tiny_cnn, 16 bits), and AHCL on RSSCN7 (frozen
# ImageNet MobileNetV2, 32 bits; needs ../shared and the weights in torch's cache).
set -euo pipefail
SRC=$(cd "${1:?source tree}" && pwd); OUT=${2:?output folder}
SHARED=${AHCL_SHARED:-$(cd "$(dirname "$0")/../.." && pwd)/shared}
rm -rf "$OUT"; mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
export PYTHONPATH="$SRC/src" AHCL_PROGRESS=0 AHCL_CACHE="$OUT/cache" OMP_NUM_THREADS=1
PY=${PYTHON:-python}
$PY -c "from ahcl.data.synthetic import write_synthetic_dataset as w; w('$OUT/syn', per_class=12, size=32, seed=0)"
$PY -m ahcl train --data "$OUT/syn" --out "$OUT/r_ahcl" --backbone tiny_cnn --bits 16 --set outer_iters=3 >/dev/null
$PY -m ahcl train --data "$OUT/syn" --out "$OUT/r_dpsh" --backbone tiny_cnn --bits 16 --method dpsh --set epochs=3 >/dev/null
if [ -d "$SHARED/data/rsscn7" ]; then
  $PY -m ahcl train --data "$SHARED/data/rsscn7" --out "$OUT/r_rsscn7" --bits 32 --set outer_iters=3 >/dev/null
fi
cd "$OUT" && sha256sum r_*/db_codes.npy
