#!/usr/bin/env bash
# Every GPU number of the fine-tuning and evaluation benches in ONE call of at most
# 8 minutes on one GPU, its own start-up included: a device session's whole budget is
# 15 minutes, machine start included, so the suite must fit one call with room to spare.
#
#   bash bench/gpu_suite.sh [OUTDIR]             # on the GPU machine (OUTDIR: $OUT)
#   PRESET=tiny bash bench/gpu_suite.sh /tmp/gs  # the same script, checked on a CPU
#
# Parts, in order of what the issues need most, each with its share of the budget (a part
# that overruns its share is stopped, and the next still runs):
#   steps_eager     training steps, OLMo-1B shape, batch 8 of 128-256 tokens, eager
#   steps_compiled  the same, packed and compiled, with host syncs counted
#   e2e             a 6,000 x 3-epoch fine-tune (MNLI size), load + train + save,
#                   packed and compiled (the setting a GPU run would use)
#   evaluate        classification MFU, multiple choice with and without prefix sharing,
#                   generation against the batch-1 path, fixed batches against auto
#   evaluate_long   auto batching on a set with 20 % of 1,800-2,048-token prompts, each at a fixed batch and at auto
#   fsdp            the sharded fine-tune (FSDP2 on NCCL, one process), SIGTERM + resume
# OUTDIR gets one log per part, JSON results, and summary.txt with every part's exit code
# and seconds.
set -uo pipefail
out=${1:-${OUT:-bench-out}}
preset=${PRESET:-olmo1b}
budget=${BUDGET:-460}  # seconds for the parts; 20 s of the 8 minutes stay for start-up
mkdir -p "$out"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# One inductor cache for the compiled parts, as the workflow's resources/cache/torchinductor.
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/ckptsweep-inductor}
start=$SECONDS
{ nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>/dev/null ||
    echo "no nvidia-smi (a CPU run)"; } | tee "$out/gpu.txt"

part() {  # part NAME SHARE CMD...: CMD for at most SHARE seconds (or what is left)
    local name=$1 share=$2
    shift 2
    local left=$((budget - (SECONDS - start)))
    local give=$((share < left ? share : left))
    if ((give < 15)); then
        echo "$name: skipped, ${left}s of the budget left" | tee -a "$out/summary.txt"
        return
    fi
    local t0=$SECONDS
    timeout --kill-after=10 "$give" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "$name: exit $rc in $((SECONDS - t0))s (share ${give}s)" | tee -a "$out/summary.txt"
    tail -n 5 "$out/$name.log"
}

train=(python3 bench/train_throughput.py --preset "$preset")
shape=(--min-len 128 --completion 3 --steps 20 --json "$out/steps.jsonl")
part steps_eager 60 "${train[@]}" "${shape[@]}"
part steps_compiled 100 "${train[@]}" "${shape[@]}" --packing --compile --sync-debug
part e2e 150 "${train[@]}" --mode e2e --packing --compile --json "$out/e2e.jsonl"
part evaluate 70 python3 bench/eval_throughput.py --preset "$preset" --dtype bfloat16 \
    --out "$out/eval.json"
# batch_size auto on a set that mixes short and 1,800-2,048-token prompts (issue 19).
part evaluate_long 40 python3 bench/eval_throughput.py --preset "$preset" --dtype bfloat16 \
    --long 0.2 --skip baseline --out "$out/eval_long.json"
part fsdp 50 python3 bench/multigpu_smoke.py --preset "$preset" --out "$out/fsdp.json"
echo "suite: $((SECONDS - start))s of ${budget}s" | tee -a "$out/summary.txt"
