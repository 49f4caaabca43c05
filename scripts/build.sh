#!/usr/bin/env bash
# Installs the dependencies if missing, configures and builds anomalysd in build/ (Release).
# Extra arguments go to CMake's configure step, e.g. -DCMAKE_PREFIX_PATH=/opt/libtorch.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

generator=()
if command -v ninja >/dev/null 2>&1 && [ ! -f build/Makefile ]; then generator=(-G Ninja); fi
cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" "$@"
# Each torch translation unit needs ~1.1 GB of RAM to compile; one job per core fits easily.
cmake --build build --parallel "$(nproc)"
