#!/usr/bin/env bash
# Copy what benchmarks/bench_device.py needs into the git-ignored .device-data/ (about 66 MB:
# RSSCN7 and the MobileNetV2 ImageNet weights), so it can travel to an accelerator machine with
# the working tree (name .device-data in the device tool's `carry`). Then, on that machine:
#
#   pip install --no-deps -e . && python benchmarks/bench_device.py --data .device-data/rsscn7 \
#       --weights .device-data/mobilenet_v2-b0353104.pth --out benchmarks/results/device
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${AHCL_SHARED:-../shared}
mkdir -p .device-data
rsync -a --delete "$SHARED/data/rsscn7/" .device-data/rsscn7/ 2>/dev/null \
  || { rm -rf .device-data/rsscn7; cp -r "$SHARED/data/rsscn7" .device-data/rsscn7; }
cp "$SHARED/weights/mobilenet_v2-b0353104.pth" .device-data/
du -sh .device-data
