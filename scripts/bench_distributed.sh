#!/usr/bin/env bash
# Fine-tuning throughput, one process against several ranks on this machine (loopback, Gloo):
#   N processes x T threads, each rank its share of the same global batch, gradients all-reduced.
# Prints steps/s per layout. The ranks are started as torchrun starts them (RANK, WORLD_SIZE,
# LOCAL_RANK, MASTER_ADDR, MASTER_PORT), without torchrun (Debian 12's crashes at start).
#
#   scripts/bench_distributed.sh MODEL_DIR DATASET_ROOT [STEPS] [CONFIG] [-- extra --set k=v ...]
#   e.g. after `anomalysd demo`: scripts/bench_distributed.sh models/demo/bootstrap/model results/demo/data 40 configs/demo.yaml
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?model folder}
data=${2:?dataset root (folder layout)}
steps=${3:-40}
config=${4:-configs/demo.yaml}
shift $(( $# < 4 ? $# : 4 ))
[ "${1:-}" = "--" ] && shift
extra=("$@")
cli=${ANOMALYSD:-build/src/anomalysd}
cores=$(nproc)
work=$(mktemp -d /tmp/anomalysd-bench-dist.XXXXXX)
trap 'rm -rf "$work"' EXIT

sets=(--set train.parts=unet --set "train.unet_steps=$steps" --set train.decoder_steps=0 --set train.save_every=0 --set train.log_every=1000000)
for e in "${extra[@]}"; do sets+=(--set "$e"); done

run() {  # $1 ranks, $2 threads each
  local ranks=$1 threads=$2 out="$work/r$1t$2" port=$((20000 + RANDOM % 20000))
  local start end pids=()
  start=$(date +%s.%N)
  for ((r = 0; r < ranks; r++)); do
    if [ "$ranks" -gt 1 ]; then
      RANK=$r WORLD_SIZE=$ranks LOCAL_RANK=$r LOCAL_WORLD_SIZE=$ranks MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
        "$cli" --log-level info finetune --config "$config" --model "$model" --dataset folder --root "$data" --shots 1 \
        --output "$out" --overwrite "${sets[@]}" --set "threads=$threads" > "$work/log.$ranks.$r" 2>&1 &
    else
      "$cli" --log-level info finetune --config "$config" --model "$model" --dataset folder --root "$data" --shots 1 \
        --output "$out" --overwrite "${sets[@]}" --set "threads=$threads" > "$work/log.$ranks.$r" 2>&1 &
    fi
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || { echo "rank failed:"; cat "$work"/log."$ranks".*; exit 1; }; done
  end=$(date +%s.%N)
  # Time per step from rank 0's log (column 8: seconds of the step), excluding start-up.
  awk -F, -v ranks="$ranks" -v threads="$threads" -v start="$start" -v end="$end" -v steps="$steps" '
    NR > 2 { s += $8; n++ }   # the first step warms up
    END { printf "%d process(es) x %d thread(s): %.3f steps/s (%.3f s per step, steady state over %d steps); wall %.1f s for %d steps incl. start-up\n",
                 ranks, threads, n / s, s / n, n, end - start, steps }' "$out/train_log.csv"
  if [ "$ranks" -gt 1 ]; then grep -o "unet: .*all-reduces.*" "$work/log.$ranks.0" || true; fi
}

echo "fine-tuning throughput, $(nproc) cores: $model, $steps UNet steps, config $config"
run 1 "$cores"
run "$cores" 1
