#!/usr/bin/env bash
# Coverage-guided fuzzing of one parser with libFuzzer (clang, ASan + UBSan):
#   scripts/fuzz.sh TARGET SECONDS      TARGET: safetensors config model_configs tokenizer dataset image
# Builds build-fuzz/ when needed, seeds the corpus (tests/fuzz/seeds/TARGET, plus ../shared/fixtures
# and configs/ where they fit), runs for SECONDS and prints executions and coverage. A crash leaves
# its input in build-fuzz/findings/TARGET/ and makes this script fail; add it to the seeds (and a
# regression test) when fixed. ANOMALYSD_FUZZ_SEED=N makes a run repeatable (CI sets it).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/fuzz.sh TARGET SECONDS}
seconds=${2:-60}
root=$(pwd)

if [ ! -f build-fuzz/CMakeCache.txt ]; then
  generator=()
  command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
  cmake -S . -B build-fuzz "${generator[@]}" -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DANOMALYSD_FUZZ=ON -DANOMALYSD_BUILD_TESTS=OFF -DANOMALYSD_PCH=OFF > build-fuzz.log 2>&1 || { tail -20 build-fuzz.log; exit 1; }
fi
cmake --build build-fuzz --target "fuzz_$target" --parallel "$(nproc)" >> build-fuzz.log 2>&1 || { tail -40 build-fuzz.log; exit 1; }

corpus=build-fuzz/corpus/$target
findings=build-fuzz/findings/$target
mkdir -p "$corpus" "$findings"
cp -n tests/fuzz/seeds/"$target"/* "$corpus"/ 2>/dev/null || true
fixtures=${ANOMALYSD_FIXTURES:-../shared/fixtures}
case $target in
  safetensors) [ -d "$fixtures" ] && find "$fixtures" -name '*.safetensors' -size -64k -exec cp -n {} "$corpus"/ \; ;;
  config) for f in configs/*.yaml; do cp -n "$f" "$corpus/$(basename "$f")"; done ;;
  model_configs) [ -d "$fixtures" ] && for f in "$fixtures"/*/config.json "$fixtures"/*/*/scheduler_config.json; do
                   [ -f "$f" ] && cp -n "$f" "$corpus/$(echo "$f" | tr '/' '_')"; done ;;
esac

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
log=build-fuzz/fuzz_$target.log
if [ "$target" = image ]; then
  # The largest image under the size cap and an oversized one, once each, under ASan and libFuzzer's
  # default RSS limit (2 GB): the first must decode, the second be refused from its header. Not
  # seeds: every mutation of a 44.7 M-pixel image would decode it again.
  large=("$root"/tests/data/images/*.bmp)
  (cd "$findings" && /usr/bin/time -f 'peak_rss_kb=%M' "$root/build-fuzz/tests/fuzz/fuzz_image" -rss_limit_mb=2048 "${large[@]}") \
    > "$log.large" 2>&1 || { tail -20 "$log.large"; echo "fuzz_image: the large images failed under the default RSS limit"; exit 1; }
  echo "fuzz_image: ${#large[@]} large images run once within -rss_limit_mb=2048 ($(grep -o 'peak_rss_kb=[0-9]*' "$log.large" | tail -1))"
fi
set +e
(cd "$findings" && "$root/build-fuzz/tests/fuzz/fuzz_$target" "$root/$corpus" -dict="$root/tests/fuzz/json.dict" \
   -max_total_time="$seconds" -max_len=65536 -timeout=20 -print_final_stats=1 \
   ${ANOMALYSD_FUZZ_SEED:+-seed=$ANOMALYSD_FUZZ_SEED}) > "$log" 2>&1
rc=$?
set -e
execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 || true)
echo "fuzz_$target: ${seconds} s, $execs executions, ${cov:-cov: ?}, corpus $(ls "$corpus" | wc -l) inputs, exit $rc"
if [ $rc -ne 0 ]; then
  grep -E 'ERROR|SUMMARY|runtime error|Test unit written' "$log" | head -20
  echo "fuzz_$target: FINDING — input kept in $findings (log: $log)"
  exit 1
fi
