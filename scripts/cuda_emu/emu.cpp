#include "emu.h"
EmuThread *emu_cur;
dim3 blockIdx, blockDim, gridDim;
float emu_xf[1024];
unsigned emu_xu[1024];
static ucontext_t emu_main;
static std::function<void()> *emu_fn;
static std::vector<char> emu_smem;
void *emu_dyn_smem() {
    return emu_smem.data();
}
void emu_yield(int state) {
    emu_cur->state = state;
    swapcontext(&emu_cur->ctx, &emu_main);
}
static void emu_entry() {
    (*emu_fn)();
    emu_cur->state = EMU_DONE;
    swapcontext(&emu_cur->ctx, &emu_main);
}
extern "C" int zoff_cuda_check(cudaError_t err, const char *what) {
    if (err == cudaSuccess) return 0;
    fprintf(stderr, "emu: %s failed\n", what);
    return -1;
}
void emu_run(dim3 grid, dim3 block, size_t smem, std::function<void()> fn) {
    int n = block.x * block.y * block.z;
    static std::vector<EmuThread> th(1024);
    static bool init;
    if (!init) {
        for (auto &t : th)
            t.stack = (char *)malloc(256 * 1024);
        init = true;
    }
    emu_smem.assign(smem + 16, (char)0x7f); // garbage-ish, like real shared memory
    blockDim = block;
    gridDim = grid;
    emu_fn = &fn;
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                blockIdx = dim3(bx, by, bz);
                for (int i = 0; i < n; i++) {
                    EmuThread &t = th[i];
                    t.lin = i;
                    t.tid = dim3(i % block.x, i / block.x % block.y, i / (block.x * block.y));
                    t.state = EMU_RUN;
                    getcontext(&t.ctx);
                    t.ctx.uc_stack.ss_sp = t.stack;
                    t.ctx.uc_stack.ss_size = 256 * 1024;
                    t.ctx.uc_link = nullptr;
                    makecontext(&t.ctx, emu_entry, 0);
                }
                for (;;) {
                    for (int i = 0; i < n; i++)
                        while (th[i].state == EMU_RUN) {
                            emu_cur = &th[i];
                            swapcontext(&emu_main, &th[i].ctx);
                        }
                    bool all_done = true, released = false;
                    for (int i = 0; i < n; i++)
                        all_done &= th[i].state == EMU_DONE;
                    if (all_done) break;
                    for (int w = 0; w * 32 < n; w++) { // warp barriers
                        bool all = true, any = false;
                        for (int i = w * 32; i < n && i < w * 32 + 32; i++) {
                            if (th[i].state == EMU_DONE) continue;
                            any = true;
                            all &= th[i].state == EMU_WBAR;
                        }
                        if (any && all) {
                            for (int i = w * 32; i < n && i < w * 32 + 32; i++)
                                if (th[i].state == EMU_WBAR) th[i].state = EMU_RUN;
                            released = true;
                        }
                    }
                    if (released) continue;
                    bool all = true;
                    for (int i = 0; i < n; i++)
                        if (th[i].state != EMU_DONE) all &= th[i].state == EMU_BBAR;
                    if (!all) {
                        fprintf(stderr, "emu: deadlock (mixed barriers) in block %u,%u\n", bx, by);
                        abort();
                    }
                    for (int i = 0; i < n; i++)
                        if (th[i].state == EMU_BBAR) th[i].state = EMU_RUN;
                }
            }
}
