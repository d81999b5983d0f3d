#!/usr/bin/env bash
# The checks only a GPU can show, in one command, for a machine that has CUDA but maybe no
# package registry (see the README, "On a machine with a GPU").
#   1. deps     with .device-debs/ (gathered beforehand by ../shared/device/prepare): unpacks
#               it into /opt/zoff-deps once (bash .device-debs/unpack.sh) and sources its
#               env.sh, so that CMake and pkg-config find liburing, hwloc, OpenBLAS, ...
#   2. build    Release with the CUDA backend, for this machine's GPU only (ZOFF_CUDA_ARCHS)
#   3. info     zoff info
#   4. tests    the *_cuda tests (every op against the host oracle, streams, events, memory,
#               the engine with every schedule, the whole-model parity); the host ones are
#               what CI runs already
#   5. benches  bench_train (bf16 GPT-2 124M shape, 8 x 1024, against the in-run bf16 GEMM)
#               and bench_offload (the same model offloaded: CPU and NVMe, each schedule,
#               against its forward+backward alone), bench_attention (fused vs materialized)
#               and PyTorch's scaled_dot_product_attention on the same shapes
# Every stage runs under its own timeout, cut to what is left of the whole budget
# (ZOFF_GPU_CHECK_BUDGET seconds, default 450: the run fits in 8 minutes on 16 cores), so a
# hang costs one stage, not the call. Five files are written to the results folder ($OUT,
# default ./gpu_results) as things happen: summary.txt (one line per stage as it ends),
# setup.log (deps, configure, build, info), ctest.log, bench.jsonl (the benchmarks' JSON
# lines) and bench.log (their stderr). Each log is appended to, one header per stage.
# Exit status: 0 when every stage passed, 1 otherwise.
# Usage: scripts/gpu_check.sh [NVME_DIR]      (NVME_DIR defaults to /tmp)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
top=$(pwd)
out=${OUT:-gpu_results}
mkdir -p "$out"
out=$(cd "$out" && pwd)
nvme=${1:-/tmp}
jobs=$(nproc)
budget=${ZOFF_GPU_CHECK_BUDGET:-450}
start=$(date +%s)
deadline=$((start + budget))
status=0
summary="$out/summary.txt"
: >"$summary"

note() { echo "$*" | tee -a "$summary"; }

# stage NAME LIMIT_S LOG COMMAND...: runs COMMAND with stdout and stderr appended to LOG,
# under a timeout of LIMIT_S or what is left of the budget, whichever is less; records the
# outcome in summary.txt.
stage() {
    local name=$1 limit=$2 log=$3
    shift 3
    local left=$((deadline - $(date +%s)))
    if [ "$left" -lt 15 ]; then
        note "$name: SKIPPED (budget spent)"
        status=1
        return 1
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "==> $name (at most ${limit}s, log: $log)"
    local t0 rc
    t0=$(date +%s)
    local before=0
    [ -e "$log" ] && before=$(wc -l <"$log")
    echo "=== $name: $*" >>"$log"
    timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
    rc=$?
    local took=$(($(date +%s) - t0))
    if [ $rc -eq 0 ]; then
        note "$name: ok (${took}s)"
    else
        if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
            note "$name: TIMED OUT after ${took}s"
        else
            note "$name: FAILED (exit $rc, ${took}s)"
        fi
        tail -n +$((before + 1)) "$log" | tail -n 30
        status=1
    fi
    return $rc
}

# 1. dependencies carried as Debian packages
debs=${ZOFF_DEVICE_DEBS:-$top/.device-debs}
if [ -d "$debs" ]; then
    if [ ! -e /opt/zoff-deps/.zoff-unpacked ]; then
        # unpack.sh rewrites absolute symlinks: run it once per machine
        stage deps 120 "$out/setup.log" bash "$debs/unpack.sh" || exit 1
        mkdir -p /opt/zoff-deps && touch /opt/zoff-deps/.zoff-unpacked
    else
        note "deps: already unpacked in /opt/zoff-deps"
    fi
    # shellcheck disable=SC1091
    . "$debs/env.sh"
else
    note "deps: no $debs: using the system's packages"
fi
for tool in cmake pkg-config; do
    command -v $tool >/dev/null || {
        note "$tool not found: on a machine without a package registry, gather the packages"
        note "with ../shared/device/prepare and carry .device-debs (see the README)"
        exit 1
    }
done

# 2. build: the GPU here only, unless ZOFF_CUDA_ARCHS says otherwise
archs=${ZOFF_CUDA_ARCHS:-native}
stage configure 120 "$out/setup.log" cmake -S . -B build/gpu -DCMAKE_BUILD_TYPE=Release \
    -DZOFF_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=$archs" || exit 1
stage build 300 "$out/setup.log" cmake --build build/gpu -j "$jobs" || exit 1

# 3. what zoff sees
stage info 30 "$out/setup.log" build/gpu/cli/zoff info --nvme-path "$nvme" &&
    sed -n '/^=== info/,$p' "$out/setup.log"

# 4. the CUDA tests, each test's outcome logged as it ends
stage tests 240 "$out/ctest.log" ctest --test-dir build/gpu -R '_cuda$|cuda_errors' -j 4 \
    --output-on-failure
grep -E "tests passed|tests failed|^\s+[0-9]+ - " "$out/ctest.log" |
    tee -a "$summary"
# on a GPU machine a skipped *_cuda test means the GPU could not be used: a failure
if command -v nvidia-smi >/dev/null && grep -q "(Skipped)" "$out/ctest.log"; then
    note "tests: *_cuda tests were SKIPPED although this machine has a GPU (see ctest.log)"
    status=1
fi

# 5. the benchmarks: stdout is the JSON lines (line-buffered, so that a benchmark stopped by
# its timeout keeps the points it printed), stderr the log
lines=()
command -v stdbuf >/dev/null && lines=(stdbuf -oL)
bench() {
    local name=$1 limit=$2
    shift 2
    # shellcheck disable=SC2016 # $0 and $@ are bash -c's own
    stage "$name" "$limit" "$out/bench.log" bash -c '"$@" >>"$0"' "$out/bench.jsonl" \
        "${lines[@]}" "$@"
}
bench bench_train 90 build/gpu/bench/bench_train --device cuda --dtype bf16 --batch 8 \
    --seq-len 1024 --steps 10
# two repeats: each is five runs (compute, the drained run, the Adam alone, the run with every
# update skipped, the offloaded run)
bench bench_offload 150 build/gpu/bench/bench_offload --device cuda --dtype bf16 --layers 12 \
    --embd 768 --heads 12 --vocab 50257 --seq 1024 --batch 8 --steps 5 --warmup 2 \
    --repeats 2 --nvme-path "$nvme"
# the fused attention against the materialized one (in-run) and against PyTorch's
# scaled_dot_product_attention on the same shapes (GPT-2 heads, 8 x 1024 included)
bench bench_attention 60 build/gpu/bench/bench_attention --device cuda --batch 8 \
    --seq-lens 256,1024 --iters 10
if python3 -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
    bench torch_sdpa 60 python3 scripts/bench_attention_torch.py --batch 8 --seq-lens 256,1024
else
    note "torch_sdpa: skipped (no PyTorch with CUDA here)"
fi

note "total: $(($(date +%s) - start))s of ${budget}s; results in $out"
exit $status
