#!/usr/bin/env bash
# The README's first command: the whole method on a synthetic few-shot benchmark, from a fresh
# clone — installs the dependencies if missing, builds, generates the data, bootstraps a small SD
# inpainting pipeline (cached under models/demo), fine-tunes it 1-shot, evaluates every setting and
# prints the table. Results: results/demo/{table.md, metrics.json, report.png, report.html}.
#
#   scripts/demo.sh                 # the demo (about 5 minutes on 2 cores after the build)
#   scripts/demo.sh --quick         # a reduced run, as CI runs it
#   scripts/demo.sh --rebuild       # bootstrap again instead of using models/demo
#   scripts/demo.sh --plan pretrained_features=1   # also pre-train AlexNet/LPIPS/EfficientNet-B6 on the
#                                   # bootstrap's images (synthetic, and real photographs: configs/photos.yaml)
#   scripts/demo.sh --benchmark photos --output results/real   # the held-out real-photograph benchmark
#                                   # (scripts/real-benchmark.sh: also with a bootstrap on its own images)
# Any other argument goes to `anomalysd demo` (e.g. --set threads=4, --plan unet_steps=2000).
set -euo pipefail
cd "$(dirname "$0")/.."

# Only the CLI (the tests come with scripts/test.sh): a fresh build takes ~2 minutes on 2 cores.
echo "demo: installing what is missing and building build/src/anomalysd (log: build-demo.log) ..."
generator=()
if command -v ninja >/dev/null 2>&1 && [ ! -f build/Makefile ]; then generator=(-G Ninja); fi
{ scripts/install-deps.sh && cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release && cmake --build build --target anomalysd --parallel "$(nproc)"; } \
  > build-demo.log 2>&1 || { tail -40 build-demo.log; echo "demo: the build failed (log: build-demo.log)"; exit 1; }
echo "demo: built in ${SECONDS} s"
exec build/src/anomalysd demo --output results/demo --cache models/demo "$@"
