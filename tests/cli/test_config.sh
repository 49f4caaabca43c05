#!/usr/bin/env bash
# `anomalysd config`: resolves the embedded default and files, and exits 2 naming the bad key.
set -u
bin=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

out=$("$bin" config --set threads=3 2>&1) || fail "embedded default: exit $?: $out"
echo "$out" | grep -q "^threads: 3$" || fail "override not applied: $out"
"$bin" config "$src/configs/default.yaml" > /dev/null || fail "configs/default.yaml rejected"

printf 'device: cpu\nthreds: 2\n' > "$tmp/typo.yaml"
out=$("$bin" config "$tmp/typo.yaml" 2>&1); rc=$?
[ $rc -eq 2 ] || fail "typo: exit $rc, expected 2"
echo "$out" | grep -qF "typo.yaml:2:1: unknown key 'threds'" || fail "typo: message: $out"

out=$("$bin" config --set seed=-4 2>&1); rc=$?
[ $rc -eq 2 ] || fail "range: exit $rc, expected 2"
echo "$out" | grep -qF -- "--set seed=-4: key 'seed' = -4 is out of range" || fail "range: message: $out"

out=$("$bin" config --bogus 2>&1); rc=$?
[ $rc -eq 2 ] || fail "unknown option: exit $rc, expected 2"

if [ $failures -eq 0 ]; then echo "cli.config: all checks passed"; else exit 1; fi
