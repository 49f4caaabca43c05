#!/usr/bin/env bash
# Benchmarks of the method (figures for the README and the issues), on this machine's CPU:
#   1. UNet calls and time per image of the tiny pipeline (../shared/fixtures) at the paper's
#      setting (86 masks, 50 DDIM steps, lambda 0.4) and with configs/fast.yaml's packing;
#   2. seconds per real-size SD2-inpainting UNet call (512^2, latent 64^2, random weights) at mask
#      batch 1, 4, 8, and the projected seconds per image and per MVTec-AD evaluation;
#   3. one fine-tuning step of that UNet, with and without gradient checkpointing.
# Usage: scripts/bench_method.sh [--skip-real-size]   (needs a build: scripts/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/src/anomalysd
fixtures=${ANOMALYSD_FIXTURES:-../shared/fixtures}
sd2=${ANOMALYSD_SD_CONFIGS:-../shared/sd-configs}/sd2-inpainting
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== 1. the tiny pipeline, 32x32 images =="
if [ -d "$fixtures/pipeline_sd2_inpaint_tiny" ]; then
  for a in alexnet lpips efficientnet_b0; do "$bin" --log-level error init-weights --arch $a --output "$tmp/w/$a.safetensors"; done
  "$bin" --log-level error make-synthetic --output "$tmp/data" --classes pill --size 32 --train 2 --test-good 4 --test-bad 4
  w="--set features.alexnet=$tmp/w/alexnet.safetensors --set features.lpips=$tmp/w/lpips.safetensors"
  w="$w --set features.efficientnet=$tmp/w/efficientnet_b0.safetensors --set features.efficientnet_variant=0 --set resolution=32"
  for setting in "paper: --set inference.mask_batch=8" "fast: --config configs/fast.yaml --set prompts=[]"; do
    name=${setting%%:*}; args=${setting#*: }
    # shellcheck disable=SC2086
    "$bin" --log-level warn infer $args $w --model "$fixtures/pipeline_sd2_inpaint_tiny" --input "$tmp/data/pill/test/good" \
      --shots "$tmp/data/pill/train/good" --class pill --output "$tmp/infer-$name" | sed -n "s/^time:/  $name: time:/p"
  done
else
  echo "  (skipped: no $fixtures/pipeline_sd2_inpaint_tiny)"
fi

if [ "${1:-}" = "--skip-real-size" ] || [ ! -f "$sd2/unet/config.json" ]; then exit 0; fi
echo "== 2. real-size SD2-inpainting UNet, one call (latent 64x64) =="
"$bin" --log-level warn bench unet --config "$sd2/unet/config.json" --batch 1 --batch 4 --batch 8 --repeats 1 | tee "$tmp/unet.txt"
awk '$1 == "unet" && $2 == 8 { s = $3;
  printf "  paper setting: ceil(86/8) x 20 = 220 calls of 8 masks = %.0f s per image; MVTec-AD (1725 test images): %.1f days\n", 220 * s, 220 * s * 1725 / 86400 }
     $1 == "unet" && $2 == 1 { s1 = $3 }
  END { if (s1) printf "  (mask batch 1: 86 x 20 = 1720 calls = %.0f s per image)\n", 1720 * s1 }' "$tmp/unet.txt"
echo "== 3. one training step of that UNet, batch 1 =="
"$bin" --log-level warn bench unet-train --config "$sd2/unet/config.json" --repeats 1
"$bin" --log-level warn bench unet-train-checkpointed --config "$sd2/unet/config.json" --repeats 1
