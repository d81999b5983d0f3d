#!/usr/bin/env bash
# zoff's host fp32 training step against PyTorch eager's on the same model and shapes, side by
# side (issue 12): for GPT-2 124M at B4 x T64 and for the demo model (4 layers, 128 wide, vocab
# 256, B16 x T64), runs bench_train --profile and scripts/bench_train_torch.py alternately
# (zoff, torch, zoff, torch, ... ROUNDS rounds) with the same thread count, so that both see the
# same machine, and prints every JSON line and then one summary line per model:
#   {"bench":"train_vs_torch","model":...,"zoff_step_s_median":...,"torch_step_s_median":...,
#    "speed_ratio": torch / zoff (> 1: zoff is faster), each side's spread over the rounds, the
#    rounds in which zoff's median step was the faster, and the best single step of each side
#    with their ratio (speed_ratio_best: the least disturbed steps, on a shared machine)}
# The medians are over the rounds' own median step times. Builds nothing: run it after
# building (cmake --build build/rel) with PyTorch installed (pip install torch; not a build or
# test dependency).
# usage: scripts/bench_train_vs_torch.sh [ROUNDS] ; env: THREADS (2), STEPS (timed steps per run:
#        5 for gpt2, 20 for the demo's short steps), WARMUP (2), BUILD (build/rel),
#        PYTHON (python3), MODELS ("gpt2 demo"), TORCH_ADAM (default)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
THREADS=${THREADS:-2}
STEPS=${STEPS:-}
WARMUP=${WARMUP:-2}
BUILD=${BUILD:-build/rel}
PYTHON=${PYTHON:-python3}
MODELS=${MODELS:-gpt2 demo}
TORCH_ADAM=${TORCH_ADAM:-default}
BENCH=$BUILD/bench/bench_train
[ -x "$BENCH" ] || { echo "bench_train_vs_torch: $BENCH not built" >&2; exit 1; }
"$PYTHON" -c 'import torch' 2>/dev/null ||
    { echo "bench_train_vs_torch: PyTorch not importable by $PYTHON (pip install torch)" >&2; exit 1; }

for model in $MODELS; do
    case $model in
    gpt2) batch=4 steps=${STEPS:-5} ;;
    demo) batch=16 steps=${STEPS:-20} ;;
    *) echo "bench_train_vs_torch: unknown model '$model' (gpt2, demo)" >&2; exit 2 ;;
    esac
    lines=()
    for ((r = 1; r <= ROUNDS; r++)); do
        z=$("$BENCH" --preset "$model" --batch "$batch" --seq-len 64 --threads "$THREADS" \
            --steps "$steps" --warmup "$WARMUP" --profile)
        echo "$z"
        t=$("$PYTHON" scripts/bench_train_torch.py --preset "$model" --batch "$batch" --seq-len 64 \
            --threads "$THREADS" --steps "$steps" --warmup "$WARMUP" --adam "$TORCH_ADAM" \
            2>/dev/null | grep '^{')
        echo "$t"
        lines+=("$z" "$t")
    done
    printf '%s\n' "${lines[@]}" | "$PYTHON" -c '
import json, statistics, sys
model = sys.argv[1]
runs = [json.loads(l) for l in sys.stdin if l.strip()]
zr = [r for r in runs if r["bench"] == "train"]
tr = [r for r in runs if r["bench"] == "train_torch"]
z, t = [r["step_s_median"] for r in zr], [r["step_s_median"] for r in tr]
zm, tm = statistics.median(z), statistics.median(t)
zb, tb = min(r["step_s"] for r in zr), min(r["step_s"] for r in tr)
print(json.dumps({"bench": "train_vs_torch", "model": model, "rounds": len(z),
                  "threads": int(sys.argv[2]), "zoff_step_s_median": zm,
                  "torch_step_s_median": tm, "speed_ratio": round(tm / zm, 3),
                  "zoff_step_s_spread": [min(z), max(z)], "torch_step_s_spread": [min(t), max(t)],
                  "rounds_zoff_faster": sum(a < b for a, b in zip(z, t)),
                  "zoff_step_s_best": zb, "torch_step_s_best": tb,
                  "speed_ratio_best": round(tb / zb, 3)},
                 separators=(",", ":")))
' "$model" "$THREADS"
done
