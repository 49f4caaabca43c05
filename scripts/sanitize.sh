#!/usr/bin/env bash
# The sanitizer job (CI runs it from scripts/test.sh): the unit tests of the parsers and of the
# metrics' index arithmetic under AddressSanitizer + UndefinedBehaviorSanitizer (clang,
# build-fuzz/), then every fuzz target for ANOMALYSD_FUZZ_SECONDS (default 30) each.
# Leak checking is off: LibTorch's and OpenCV's process-lifetime globals read as leaks.
set -euo pipefail
cd "$(dirname "$0")/.."
generator=()
command -v ninja >/dev/null 2>&1 && [ ! -f build-fuzz/Makefile ] && generator=(-G Ninja)
echo "sanitize: building build-fuzz/ (clang, ASan + UBSan; log: build-fuzz.log)"
cmake -S . -B build-fuzz "${generator[@]}" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DANOMALYSD_FUZZ=ON -DANOMALYSD_BUILD_TESTS=OFF -DANOMALYSD_PCH=OFF > build-fuzz.log 2>&1 || { tail -20 build-fuzz.log; exit 1; }
cmake --build build-fuzz --target anomalysd_parse_tests fuzz_all --parallel "$(nproc)" >> build-fuzz.log 2>&1 || { tail -40 build-fuzz.log; exit 1; }
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
echo "sanitize: parser and metric tests under ASan + UBSan"
ANOMALYSD_FIXTURES=${ANOMALYSD_FIXTURES:-../shared/fixtures} build-fuzz/tests/fuzz/anomalysd_parse_tests --gtest_brief=1
# A fixed libFuzzer seed: CI runs the same inputs each time, so that a red run is a regression,
# not luck; exploratory campaigns use scripts/fuzz.sh without it.
for t in safetensors config model_configs tokenizer dataset image; do
  ANOMALYSD_FUZZ_SEED=${ANOMALYSD_FUZZ_SEED:-1} scripts/fuzz.sh "$t" "${ANOMALYSD_FUZZ_SECONDS:-30}"
done
