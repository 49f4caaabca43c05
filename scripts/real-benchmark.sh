#!/usr/bin/env bash
# The held-out real-photograph benchmark (README, "Real photographs"): `anomalysd make-photo-benchmark`
# builds it from GIMP's photographic patterns (configs/photos.yaml, role heldout: no training set of
# this project reads them) with planted defects (foreign material, scratches, smudges, stains) and
# exact masks, in the MVTec-AD layout at the demo's size; then the demo's protocol runs on it —
# 1-shot fine-tuning, the full method, its ablations, 0-shot, and the baselines (mean image, raw-patch
# and EfficientNet patch nearest neighbour).
#
#   scripts/real-benchmark.sh          # with the demo's default bootstrap (cached in models/demo):
#                                      #   results/real/table.md
#   scripts/real-benchmark.sh --own    # also `anomalysd bootstrap` on the benchmark's own normal
#                                      #   training images (models/real-own), then the same protocol:
#                                      #   results/real-own/table.md
# Other arguments go to `anomalysd demo` (e.g. --quick, --set threads=4).
set -euo pipefail
cd "$(dirname "$0")/.."
own=0
args=()
for a in "$@"; do
  if [ "$a" = "--own" ]; then own=1; else args+=("$a"); fi
done
if [ ! -x build/src/anomalysd ]; then
  scripts/install-deps.sh && cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release && cmake --build build --target anomalysd
fi
cli=build/src/anomalysd
# `demo` exits with 3 when the method is not above the mean-image baseline: a result here (the
# README's table reports it), not a failure of the script.
demo() { "$cli" demo "$@" || { rc=$?; [ "$rc" -eq 3 ] || exit "$rc"; }; }
demo --benchmark photos --output results/real --cache models/demo "${args[@]}"
if [ "$own" = 1 ]; then
  # The same images as results/real/data (the demo's seed and size): the bootstrap learns from the
  # 10 normal training images of each class (and the shipped photographs), never a test image.
  start=$SECONDS
  "$cli" bootstrap --dataset folder --root results/real/data --output models/real-own
  echo "real-benchmark: anomalysd bootstrap took $((SECONDS - start)) s"
  demo --benchmark photos --bootstrap models/real-own --output results/real-own "${args[@]}"
fi
