#!/usr/bin/env python3
"""PyTorch eager's fp32 training step on the shapes bench_train measures: the baseline for
bench_train's host backend (issue 12). Not a build or test dependency: PyTorch is installed
from PyPI on a development machine only to run this.

The step is what bench_train's reference trainer runs: forward (GPT-2: learned positions,
pre-LayerNorm blocks, causal attention, tanh-GELU MLP, final LayerNorm, head tied to wte),
cross-entropy over the full vocabulary, backward, the global gradient norm with clipping at
1.0, and AdamW (lr 1e-3, betas 0.9/0.95, eps 1e-8, weight decay 0.1 on matrices and
embeddings, zoff's optimizer defaults). Attention is PyTorch's scaled_dot_product_attention
(its fused CPU kernel), the fastest eager form. AdamW is torch.optim.AdamW as a user gets it
(--adam default), or its fused CPU kernel (--adam fused) or foreach form (--adam foreach).

Prints one JSON line per point, like bench_train:
  {"bench":"train_torch",...,"step_s":best,"step_s_median":...,"ms_by_family":{...}}
step_s is the best of the timed steps, step_s_median their median. ms_by_family is a
torch.profiler breakdown of further, separately run steps (the profiler's own cost is kept out
of step_s): each op's self time, per step, grouped by op family; ops inside the optimizer's
range count as adamw, those inside the gradient-norm range as grad_norm.
usage: bench_train_torch.py [--preset gpt2|demo] [--n-layer N --n-head N --n-embd N --vocab N]
       [--ctx N] [--batch N] [--seq-len N] [--steps N] [--warmup N] [--threads N]
       [--profile-steps N] [--adam default|fused|foreach]
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, vocab=50257, batch=4),
    "demo": dict(n_layer=4, n_head=4, n_embd=128, vocab=256, batch=16),
}


class Block(nn.Module):
    def __init__(self, C, NH):
        super().__init__()
        self.NH = NH
        self.ln1 = nn.LayerNorm(C, eps=1e-5)
        self.qkv = nn.Linear(C, 3 * C)
        self.proj = nn.Linear(C, C)
        self.ln2 = nn.LayerNorm(C, eps=1e-5)
        self.fc = nn.Linear(C, 4 * C)
        self.fc_proj = nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.NH, C // self.NH).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.fc_proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, L, NH, C, V, ctx):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(ctx, C)
        self.blocks = nn.ModuleList(Block(C, NH) for _ in range(L))
        self.ln_f = nn.LayerNorm(C, eps=1e-5)
        resid_std = 0.02 / math.sqrt(2 * L)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = resid_std if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for b in self.blocks:
            x = b(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)  # the head, tied to wte
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


FAMILIES = [  # (family, substrings of the aten op name), first match wins
    ("gemm", ("addmm", "aten::mm", "bmm", "matmul", "linear")),
    ("layernorm", ("layer_norm",)),
    ("gelu", ("gelu",)),
    ("attention", ("scaled_dot_product", "flash_attention", "attention", "aten::_softmax",
                   "softmax_backward")),
    ("xent", ("log_softmax", "nll_loss", "cross_entropy")),
    ("embedding", ("embedding", "index_select", "index_add", "index_put")),
]


def family_of(name):
    for fam, keys in FAMILIES:
        if any(k in name for k in keys):
            return fam
    return "other"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", choices=sorted(PRESETS), default="gpt2")
    for k in ("n-layer", "n-head", "n-embd", "vocab", "batch"):
        ap.add_argument("--" + k, type=int)
    ap.add_argument("--ctx", type=int, default=1024, help="positions (bench_train: max(T, 1024))")
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile-steps", type=int, default=2, help="0: no breakdown")
    ap.add_argument("--adam", choices=("default", "fused", "foreach"), default="default")
    a = ap.parse_args()
    cfg = dict(PRESETS[a.preset])
    for k in ("n_layer", "n_head", "n_embd", "vocab", "batch"):
        if getattr(a, k) is not None:
            cfg[k] = getattr(a, k)
    torch.set_num_threads(a.threads)
    torch.manual_seed(7)
    L, NH, C, V, B = (cfg[k] for k in ("n_layer", "n_head", "n_embd", "vocab", "batch"))
    T = a.seq_len
    model = GPT(L, NH, C, V, max(a.ctx, T))
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    kw = {} if a.adam == "default" else {a.adam: True}
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8, **kw)
    x = torch.randint(0, V, (B, T))
    y = torch.randint(0, V, (B, T))

    def step(rf=None):
        loss = model(x, y)
        loss.backward()
        with rf("grad_norm") if rf else _null():
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        with rf("adamw") if rf else _null():
            opt.step()
            opt.zero_grad(set_to_none=True)
        return loss.item()

    times = []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        loss = step()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    out = {"bench": "train_torch", "torch": torch.__version__, "threads": a.threads,
           "arch": "gpt2", "n_layer": L, "n_head": NH, "n_embd": C, "vocab_size": V, "batch": B,
           "seq_len": T, "dtype": "f32", "adam": a.adam,
           "n_params": sum(p.numel() for p in model.parameters()), "steps": a.steps,
           "step_s": round(min(times), 4), "step_s_median": round(statistics.median(times), 4),
           "step_s_mean": round(statistics.mean(times), 4),
           "tokens_per_s": round(B * T / min(times), 1), "final_loss": round(loss, 4)}
    if a.profile_steps > 0:
        out["ms_by_family"] = profile(step, a.profile_steps)
        out["ms_by_family_sum"] = round(sum(out["ms_by_family"].values()), 2)
    print(json.dumps(out, separators=(",", ":")), flush=True)


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *e):
        return False


def profile(step, n):
    from torch.profiler import ProfilerActivity, profile as tprof, record_function
    with tprof(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step(record_function)
    events = list(prof.events())
    ranges = [(e.name, e.time_range.start, e.time_range.end) for e in events
              if e.name in ("grad_norm", "adamw")]
    ms = {}
    for e in events:
        if e.name in ("grad_norm", "adamw") or e.self_cpu_time_total <= 0:
            continue
        fam = None
        for rname, t0, t1 in ranges:
            if t0 <= e.time_range.start and e.time_range.end <= t1:
                fam = rname
                break
        fam = fam or family_of(e.name)
        ms[fam] = ms.get(fam, 0.0) + e.self_cpu_time_total / 1000.0 / n
    return {k: round(v, 2) for k, v in sorted(ms.items(), key=lambda kv: -kv[1])}


if __name__ == "__main__":
    main()
