#!/usr/bin/env bash
# The evaluation commands as users run them: eval-maps errors and exit codes, the eval-maps
# benchmark on a small synthetic class, and merge-results on two partial runs.
set -u
bin=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

out=$("$bin" eval-maps --root "$tmp/nowhere" --maps "$tmp" --output "$tmp/r/metrics.json" 2>&1); rc=$?
[ $rc -eq 2 ] || fail "missing dataset: exit $rc, expected 2"
echo "$out" | grep -qF "nowhere: dataset folder not found" || fail "missing dataset: message: $out"

out=$("$bin" --log-level warn bench eval-maps --batch 20 --size 64 --repeats 1 2>&1) || fail "bench eval-maps: exit $?: $out"
echo "$out" | grep -qE '^eval-maps +20 ' || fail "bench eval-maps: no figures in: $out"

part() {  # class name, image AUROC
  cat <<JSON
{"format": "anomalysd-metrics", "dataset": "mvtec", "method": "AnomalySD", "setup": "1-shot",
 "classes": {"$1": {"image_auroc": $2, "image_ap": 0.9, "image_f1_max": 0.8, "pixel_auroc": 0.95, "pixel_ap": 0.5,
                   "pixel_f1_max": 0.55, "pixel_pro": 0.85, "test_images": 10, "anomalous_images": 5, "seconds": 1.0}},
 "config": {}, "shots": {}, "versions": {}, "timing": {"seconds": 1.0}}
JSON
}
mkdir -p "$tmp/a" "$tmp/b"
part bottle 0.90 > "$tmp/a/metrics.json"
part cable 0.80 > "$tmp/b/metrics.json"
out=$("$bin" merge-results "$tmp/a" "$tmp/b/metrics.json" --output "$tmp/merged" 2>&1) || fail "merge: exit $?: $out"
grep -qF "| 1-shot | AnomalySD | 85.0 | 90.0 | 80.0 | 95.0 | 85.0 |" "$tmp/merged/table.md" || fail "merged table: $(cat "$tmp/merged/table.md")"
grep -q '^bottle,' "$tmp/merged/metrics.csv" && grep -q '^cable,' "$tmp/merged/metrics.csv" || fail "merged csv"
out=$("$bin" merge-results "$tmp/a" "$tmp/a" --output "$tmp/dup" 2>&1); rc=$?
[ $rc -eq 2 ] || fail "duplicate class: exit $rc, expected 2"
echo "$out" | grep -qF "class 'bottle' is also in" || fail "duplicate class: message: $out"

if [ $failures -eq 0 ]; then echo "cli.eval: all checks passed"; else exit 1; fi
