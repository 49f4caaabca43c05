#!/usr/bin/env bash
# scripts/convert_torchvision_weights.py on randomly initialised torchvision models: its files must
# load in the C++ code and reproduce torchvision's own outputs. Needs Python with torch and
# torchvision (Debian: python3-torchvision); skips (77) without.
set -u
bin=$1
src=$2
py=""
for candidate in /usr/bin/python3 python3; do
  if "$candidate" -c "import torch, torchvision" 2>/dev/null; then py=$candidate; break; fi
done
if [ -z "$py" ]; then echo "skip: no Python with torch + torchvision (apt install python3-torchvision)"; exit 77; fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" "$src/scripts/convert_torchvision_weights.py" --random "$tmp" || { echo "FAIL: conversion"; exit 1; }
"$bin" --log-level warn forward --component efficientnet --weights "$tmp/efficientnet_b6.safetensors" \
  --inputs "$tmp/reference_outputs.safetensors" --output "$tmp/b6.safetensors" || { echo "FAIL: efficientnet forward"; exit 1; }
"$bin" --log-level warn forward --component alexnet --weights "$tmp/alexnet.safetensors" \
  --inputs "$tmp/reference_outputs.safetensors" --output "$tmp/alex.safetensors" || { echo "FAIL: alexnet forward"; exit 1; }
"$bin" --log-level warn forward --component lpips --weights "$tmp/alexnet.safetensors" --lpips-weights "$tmp/lpips_alex_v0.1.safetensors" \
  --inputs "$tmp/reference_outputs.safetensors" --output "$tmp/lpips.safetensors" 2>&1 | grep -q "lpips_in0" \
  || { echo "FAIL: lpips did not name its missing input"; exit 1; }

"$py" - "$tmp" <<'PY'
import json, struct, sys, torch
def read(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    out = {}
    for k, v in header.items():
        if k == "__metadata__": continue
        a, b = v["data_offsets"]
        assert v["dtype"] == "F32", (k, v["dtype"])
        out[k] = torch.frombuffer(bytearray(raw[8 + n + a:8 + n + b]), dtype=torch.float32).reshape(v["shape"])
    return out
d = sys.argv[1]
ref = read(f"{d}/reference_outputs.safetensors")
got = {**read(f"{d}/b6.safetensors"), **read(f"{d}/alex.safetensors")}
bad = 0
for k, r in ref.items():
    if k == "input": continue
    tol = (1e-3 if k.startswith("features.") and int(k.split(".")[1]) >= 5 else 1e-4) * max(1.0, r.abs().max().item())
    err = (got[k] - r).abs().max().item()
    print(f"{k}: max abs diff {err:.3g} (tolerance {tol:.3g})")
    bad += err > tol
sys.exit(1 if bad else 0)
PY
rc=$?
[ $rc -eq 0 ] && echo "convert_torchvision_weights: all checks passed" || echo "FAIL: outputs differ"
exit $rc
