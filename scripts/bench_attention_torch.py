#!/usr/bin/env python3
"""PyTorch's scaled_dot_product_attention (causal, forward + backward) on the shapes that
bench_attention measures, as the external baseline for zoff's fused attention on a GPU: one JSON
line per T with the best and median milliseconds of the timed runs. Run where PyTorch is
installed (the GPU machine has it); it is not a build or test dependency.
usage: bench_attention_torch.py [--batch B] [--heads NH] [--head-size HS] [--seq-lens T1,T2]
                                [--dtype f32|bf16] [--iters N] [--warmup N] [--device cuda]"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--head-size", type=int, default=64)
    ap.add_argument("--seq-lens", default="64,128,256,512,1024")
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    dt = torch.float32 if a.dtype == "f32" else torch.bfloat16
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for T in (int(t) for t in a.seq_lens.split(",")):
        shape = (a.batch, a.heads, T, a.head_size)
        q, k, v = (torch.randn(shape, device=dev, dtype=dt, requires_grad=True) for _ in range(3))
        dout = torch.randn(shape, device=dev, dtype=dt)
        times = []
        for i in range(a.warmup + a.iters):
            sync()
            t0 = time.perf_counter()
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            out.backward(dout)
            sync()
            if i >= a.warmup:
                times.append((time.perf_counter() - t0) * 1e3)
            q.grad = k.grad = v.grad = None
        print(json.dumps({"bench": "attention_torch_sdpa", "device": str(dev), "dtype": a.dtype,
                          "B": a.batch, "T": T, "NH": a.heads, "HS": a.head_size,
                          "iters": a.iters, "ms": round(min(times), 3),
                          "median_ms": round(statistics.median(times), 3),
                          "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
