#!/usr/bin/env bash
# Runs the CUDA backend's own kernels (gpu/cuda/*.cu, through their launchers) on a CPU emulator
# of the CUDA execution model and compares each with the host backend's op on the same inputs:
# a check of the kernels' indexing, masking, barriers, warp shuffles and reductions on a
# machine without a GPU. It does not replace the *_cuda tests on a GPU: blocks run one after
# another with coroutine threads (no real memory model, no timing), cuBLAS is absent (only the
# backend's own GEMM kernel runs), and the launch configuration limits of a GPU (shared memory,
# registers) are not checked.
# usage: scripts/cuda_emu/run.sh    (builds the host objects in build/cuda_emu; needs g++,
#        python3 and the CUDA headers in $CUDA_HOME/include, default /usr/local/cuda)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/scripts/cuda_emu
out=$root/build/cuda_emu
cuda_inc=${CUDA_HOME:-/usr/local/cuda}/include
cmake -S "$root" -B "$out" -DCMAKE_BUILD_TYPE=Release -DZOFF_CUDA=OFF >"$out.configure.log" 2>&1 ||
    { cat "$out.configure.log"; exit 1; }
objs=$(make -C "$out" help | awk '/^\.\.\. (core|gpu)\/.*\.o$/ {print $2}')
# shellcheck disable=SC2086
make -C "$out" -j"${JOBS:-2}" $objs >/dev/null
mkdir -p "$out/emu"
cxx=(g++ -std=c++17 -O1 -g -w "-I$here/include" "-I$here" "-I$root" "-I$root/include" "-I$out"
     "-I$cuda_inc")
for f in ops_flash_attention ops_embedding ops_reduce ops_layernorm ops_xent ops_elementwise \
         ops_gemm; do
    python3 "$here/prep.py" "$root/gpu/cuda/$f.cu" "$out/emu/$f.cpp"
    "${cxx[@]}" -c "$out/emu/$f.cpp" -o "$out/emu/$f.o"
done
for f in emu cublas_stub emu_test; do
    "${cxx[@]}" -c "$here/$f.cpp" -o "$out/emu/$f.o"
done
mapfile -t lib < <(find "$out/CMakeFiles/zoff.dir/core" "$out/CMakeFiles/zoff.dir/gpu" -name '*.o')
g++ -o "$out/emu/emu_test" "$out"/emu/*.o "${lib[@]}" -fopenmp -lopenblas -lm -lpthread
"$out/emu/emu_test"
