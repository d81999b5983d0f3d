#!/usr/bin/env bash
# The checks only a GPU can show, in one command, for a session that has one (see the README).
# Builds with the CUDA backend, prints `zoff info`, runs the whole test suite (the *_cuda
# tests run for real instead of skipping), then the GPU benchmarks:
#   bench_train    bf16 GPT-2 124M shape at batch 8 x 1024 against the in-run bf16 GEMM
#   bench_offload  the same model offloaded (CPU and NVMe targets, each schedule) against
#                  its forward+backward alone
# Results go to $OUT (default ./gpu_results): logs and the JSON lines.
# Usage: scripts/gpu_check.sh [NVME_DIR]      (NVME_DIR defaults to /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_results}
nvme=${1:-/tmp}
mkdir -p "$out"
jobs=$(nproc)
echo "==> building build/gpu (CUDA on)"
cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release -DZOFF_CUDA=ON >"$out/configure.log" 2>&1 ||
    { tail -n 40 "$out/configure.log"; exit 1; }
cmake --build build/gpu -j "$jobs" >"$out/build.log" 2>&1 || { tail -n 60 "$out/build.log"; exit 1; }
build/gpu/cli/zoff info --nvme-path "$nvme" | tee "$out/info.txt"
echo "==> tests"
status=0
(cd build/gpu && ctest --output-on-failure -j 4) 2>&1 | tee "$out/ctest.txt" || status=1
echo "==> bench_train (cuda, bf16, 8 x 1024)"
build/gpu/bench/bench_train --device cuda --dtype bf16 --batch 8 --seq-len 1024 --steps 10 \
    2>"$out/bench_train.err" | tee "$out/bench_train.jsonl" || status=1
echo "==> bench_offload (cuda, bf16)"
build/gpu/bench/bench_offload --device cuda --dtype bf16 --layers 12 --embd 768 --heads 12 \
    --vocab 50257 --seq 1024 --batch 8 --steps 5 --warmup 2 --nvme-path "$nvme" \
    2>"$out/bench_offload.err" | tee "$out/bench_offload.jsonl" || status=1
exit $status
