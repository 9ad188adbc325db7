#!/usr/bin/env bash
# Every GPU number the issue notes report, in four parts, each one device call of under
# 10 minutes on one H100 (steps, e2e and other are the numbers; trainer is the
# yardstick for our loop, for when the budget allows):
#
#   bash bench/gpu_suite.sh steps [OUTDIR]  # training steps, OLMo-1B shape, batch 8 of
#                                           # 128-256 tokens: eager padded / packed,
#                                           # compiled packed; host syncs and profiles
#   bash bench/gpu_suite.sh e2e [OUTDIR]    # 6,000 x 3-epoch MNLI-size fine-tune, load +
#                                           # train + save: eager, then compiled + packed
#   bash bench/gpu_suite.sh other [OUTDIR]  # sharded fine-tuning smoke (FSDP2 on NCCL,
#                                           # SIGTERM + resume) and the evaluation bench
#   bash bench/gpu_suite.sh trainer [OUTDIR] # a 2,000 x 3-epoch fine-tune through our loop
#                                           # and through transformers' Trainer, eager
#
# OUTDIR (default: $OUT on the device machine, else bench-out) gets JSON lines and logs.
set -euo pipefail
part=${1:?usage: gpu_suite.sh steps|e2e|other|trainer [OUTDIR]}
out=${2:-${OUT:-bench-out}}
mkdir -p "$out"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# One inductor cache for the compiled runs, as the workflow's resources/cache/torchinductor.
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/ckptsweep-inductor}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv | tee "$out/gpu.txt" || true
preset=${PRESET:-olmo1b}  # PRESET=tiny: a quick check of this script on a CPU
train=(python3 bench/train_throughput.py --preset "$preset")
case $part in
steps)
    shape=(--min-len 128 --completion 3 --json "$out/steps.jsonl")
    "${train[@]}" "${shape[@]}" --sync-debug --profile 2>&1 | tee "$out/steps_eager.log"
    "${train[@]}" "${shape[@]}" --packing --sync-debug 2>&1 | tee -a "$out/steps_eager.log"
    "${train[@]}" "${shape[@]}" --packing --compile --sync-debug --profile 2>&1 |
        tee "$out/steps_compiled.log"
    ;;
e2e)
    "${train[@]}" --mode e2e --json "$out/e2e.jsonl" 2>&1 | tee "$out/e2e.log"
    "${train[@]}" --mode e2e --packing --compile --json "$out/e2e.jsonl" 2>&1 |
        tee -a "$out/e2e.log"
    ;;
other)
    python3 bench/multigpu_smoke.py --preset "$preset" 2>&1 | tee "$out/multigpu.log"
    python3 bench/eval_throughput.py --preset "$preset" --dtype bfloat16 --out "$out/eval.json" \
        2>&1 | tee "$out/eval.log"
    ;;
trainer)
    for engine in ours trainer; do
        "${train[@]}" --mode e2e --examples 2000 --engine $engine --json "$out/engines.jsonl"
    done 2>&1 | tee "$out/engines.log"
    ;;
*)
    echo "unknown part: $part (steps, e2e, other or trainer)" >&2
    exit 2
    ;;
esac
