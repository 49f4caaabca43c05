#!/usr/bin/env bash
# `anomalysd inspect` as users run it: listing, --json, and exit code 2 with a one-line message
# on truncated, garbled and missing files.
set -u
bin=$1
# $ANOMALYSD_FIXTURES set by the user wins over the configure-time default.
fixtures=${ANOMALYSD_FIXTURES:-${2:-}}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# A valid file written byte by byte: 8-byte LE header length, JSON header, 8 data bytes.
header='{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
while [ $(( ${#header} % 8 )) -ne 0 ]; do header="$header "; done
len=${#header}
printf "$(printf '\\x%02x' "$len")\\x00\\x00\\x00\\x00\\x00\\x00\\x00" > "$tmp/ok.safetensors"
printf '%s' "$header" >> "$tmp/ok.safetensors"
printf '\x00\x00\x80\x3f\x00\x00\x00\x40' >> "$tmp/ok.safetensors"

out=$("$bin" inspect "$tmp/ok.safetensors" 2>&1); rc=$?
[ $rc -eq 0 ] || fail "valid file: exit $rc: $out"
echo "$out" | grep -q "1 tensors" || fail "valid file: no tensor count in: $out"
echo "$out" | grep -qE '^w +F32 +\[2\] +8$' || fail "valid file: row for 'w' missing in: $out"
"$bin" inspect --json "$tmp/ok.safetensors" | grep -q '"dtype": "F32"' || fail "--json lacks the dtype"

check_bad() {  # file, expected message fragment
  local out rc
  out=$("$bin" inspect "$1" 2>&1); rc=$?
  [ $rc -eq 2 ] || fail "$1: exit code $rc, expected 2 (output: $out)"
  [ "$(echo "$out" | wc -l)" -eq 1 ] || fail "$1: expected a one-line error, got: $out"
  echo "$out" | grep -qF "$2" || fail "$1: message lacks '$2': $out"
}

head -c 30 "$tmp/ok.safetensors" > "$tmp/truncated_header.safetensors"
check_bad "$tmp/truncated_header.safetensors" "the file is truncated"
head -c $((8 + len + 4)) "$tmp/ok.safetensors" > "$tmp/truncated_data.safetensors"
check_bad "$tmp/truncated_data.safetensors" "run past the end of the data section"
cp "$tmp/ok.safetensors" "$tmp/garbled.safetensors"
printf 'GARBAGE!' | dd of="$tmp/garbled.safetensors" bs=1 seek=12 conv=notrunc status=none
check_bad "$tmp/garbled.safetensors" "header is not valid JSON"
check_bad "$tmp/missing.safetensors" "cannot open"

if [ -n "$fixtures" ] && [ -d "$fixtures" ]; then
  f="$fixtures/unet_sd2_inpaint_tiny/diffusion_pytorch_model.safetensors"
  out=$("$bin" inspect "$f" 2>&1) || fail "fixture: exit $?"
  echo "$out" | grep -q "304 tensors" || fail "fixture: expected 304 tensors"
  echo "$out" | grep -qE '^conv_in.weight +F32 +\[32, 9, 3, 3\] +10368$' || fail "fixture: conv_in.weight row"
  head -c 100000 "$f" > "$tmp/unet_cut.safetensors"
  check_bad "$tmp/unet_cut.safetensors" "run past the end of the data section"
elif [ "${CI:-}" = true ]; then
  fail "parity fixtures not found at '$fixtures' and CI=true: they must be present in CI"
else
  echo "note: parity fixtures not found at '$fixtures'; fixture part skipped"
fi

if [ $failures -eq 0 ]; then echo "cli.inspect: all checks passed"; else exit 1; fi
