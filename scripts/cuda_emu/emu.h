// A small CPU emulator of the CUDA execution model, enough to run zoff's kernels without a GPU
// (scripts/cuda_emu/run.sh): blocks run one after another; a block's threads are ucontext
// coroutines that run until they reach a barrier. A warp operation (shuffle, ballot) is an
// exchange through a buffer between two warp barriers; a warp barrier opens when every live
// thread of the warp is at it, a block barrier when every live thread of the block is at it
// (a thread that has returned no longer counts, as on a GPU). __shared__ variables are static:
// only one block runs at a time. Mixed barriers (a kernel bug on a GPU) abort with a message.
#pragma once
#include <cuda_runtime_api.h>
#include <ucontext.h>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>
#include <algorithm>
#include "zoff/zoff.h"
extern "C" {
#include "core/half.h"
}

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __shared__ static

using std::isfinite;
using std::max;
using std::min;

struct EmuThread {
    ucontext_t ctx;
    dim3 tid;
    int lin, state;
    char *stack;
};
enum { EMU_RUN, EMU_BBAR, EMU_WBAR, EMU_DONE };
extern EmuThread *emu_cur;
extern dim3 blockIdx, blockDim, gridDim;
#define threadIdx (emu_cur->tid)
void emu_yield(int state);
void *emu_dyn_smem();
extern float emu_xf[1024];
extern unsigned emu_xu[1024];

inline void __syncthreads() {
    emu_yield(EMU_BBAR);
}
inline void emu_wbar() {
    emu_yield(EMU_WBAR);
}
inline float __shfl_sync(unsigned, float v, int src) {
    int t = emu_cur->lin;
    emu_xf[t] = v;
    emu_wbar();
    float r = emu_xf[(t & ~31) + (src & 31)];
    emu_wbar();
    return r;
}
inline float __shfl_xor_sync(unsigned m, float v, int off) {
    return __shfl_sync(m, v, (emu_cur->lin & 31) ^ off);
}
inline float __shfl_down_sync(unsigned m, float v, int off) {
    int lane = emu_cur->lin & 31;
    float r = __shfl_sync(m, v, lane + off < 32 ? lane + off : lane);
    return r;
}
inline unsigned __ballot_sync(unsigned, int pred) {
    int t = emu_cur->lin;
    emu_xu[t] = pred != 0;
    emu_wbar();
    unsigned b = 0;
    for (int l = 0; l < 32; l++)
        b |= emu_xu[(t & ~31) + l] << l;
    emu_wbar();
    return b;
}
inline bool __any_sync(unsigned m, int pred) {
    return __ballot_sync(m, pred) != 0;
}
inline int __syncthreads_or(int pred) {
    int t = emu_cur->lin;
    emu_xu[t] = pred != 0;
    __syncthreads();
    int any = 0, n = blockDim.x * blockDim.y * blockDim.z;
    for (int i = 0; i < n; i++)
        any |= emu_xu[i];
    __syncthreads();
    return any;
}
inline int __popc(unsigned x) {
    return __builtin_popcount(x);
}
inline float rsqrtf(float x) {
    return 1.0f / sqrtf(x);
}

void emu_run(dim3 grid, dim3 block, size_t smem, std::function<void()> fn);
template <typename F> void emu_launch(dim3 grid, dim3 block, size_t smem, cudaStream_t, F f) {
    emu_run(grid, block, smem, std::function<void()>(f));
}
#define cudaGetLastError()        cudaSuccess
#define cudaFuncSetAttribute(...) cudaSuccess
