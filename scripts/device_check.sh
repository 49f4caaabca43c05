#!/usr/bin/env bash
# GPU check for a machine with PyTorch 2.x + CUDA but none of our apt packages (the project's lent
# GPU machine): builds the model library's LibTorch-only sources against PyTorch's LibTorch and
# runs tests/device/device_parity on CUDA against the reference fixtures.
#
# Needs build-device/include/nlohmann (header-only JSON) and build-device/fixtures (a copy of
# ../shared/fixtures); `scripts/device_check.sh --prepare` makes both on the development machine.
# `scripts/device_check.sh --bench` also times the real-size SD2-inpainting UNet and VAE on the GPU.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
  rm -rf build-device && mkdir -p build-device/include
  cp -r /usr/include/nlohmann build-device/include/
  cp -r "${ANOMALYSD_FIXTURES:-../shared/fixtures}" build-device/fixtures
  cp -r "${ANOMALYSD_SD_CONFIGS:-../shared/sd-configs}" build-device/sd-configs
  chmod -R u+w build-device
  du -sh build-device
  exit 0
fi

out=${OUT:-build-device}
py=$(command -v python3 || command -v python)
prefix=$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)')
echo "torch $("$py" -c 'import torch; print(torch.__version__, torch.version.cuda)') at $prefix"
nvidia-smi -L || true
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
start=$(date +%s)
cmake -S tests/device -B build-device/build "${generator[@]}" -DCMAKE_PREFIX_PATH="$prefix" \
  -DNLOHMANN_INCLUDE_DIR="$PWD/build-device/include" -DCMAKE_BUILD_TYPE=Release > "$out/configure.log" 2>&1 \
  || { tail -40 "$out/configure.log"; exit 1; }
cmake --build build-device/build --parallel "$(nproc)" > "$out/build.log" 2>&1 || { grep -E "error|Error" -A3 "$out/build.log" | head -60; exit 1; }
echo "build: $(( $(date +%s) - start )) s"
bench=()
[ "${1:-}" = "--bench" ] && bench=(--bench build-device/sd-configs)
build-device/build/device_parity build-device/fixtures cuda "${bench[@]}" | tee "$out/device_parity.txt"
