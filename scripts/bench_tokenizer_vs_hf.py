#!/usr/bin/env python3
"""Times Hugging Face `tokenizers` (single thread) and zoff's C tokenizer on the same text and
prints one JSON line for each, plus their ratio: the in-run baseline of bench_tokenizer.
  python3 scripts/bench_tokenizer_vs_hf.py [--bench build/release/bench/bench_tokenizer]
      [--tokenizer DIR ...] [--text FILE] [--copies N] [--repeat N]
Defaults: the five fixtures in tests/fixtures/tokenizer, and a text of GPL-3 followed by the
fixture test corpus, repeated --copies times (different copies hit the word caches, as real
text does)."""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
from tokenizers import Tokenizer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures", "tokenizer")


def make_text(copies):
    with open("/usr/share/common-licenses/GPL-3", encoding="utf-8") as f:
        gpl = f.read()
    cases = []
    with open(os.path.join(FIX, "gpt2", "expected.tsv")) as f:
        for line in f:
            cases.append(bytes.fromhex(line.split("\t")[0]).decode("utf-8", "replace"))
    return ((gpl + "\n".join(cases) + "\n") * copies).encode("utf-8")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", default=os.path.join(ROOT, "build", "release", "bench",
                                                    "bench_tokenizer"))
    ap.add_argument("--tokenizer", action="append")
    ap.add_argument("--text")
    ap.add_argument("--copies", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    dirs = a.tokenizer or [os.path.join(FIX, n) for n in ("gpt2", "llama3", "qwen2", "spm", "metaspace")]
    if a.text:
        path = a.text
        with open(path, "rb") as f:
            data = f.read()
    else:
        data = make_text(a.copies)
        fd, path = tempfile.mkstemp(suffix=".txt")
        os.write(fd, data)
        os.close(fd)
    text = data.decode("utf-8", "replace")
    lines = text.split("\n")
    for d in dirs:
        hf = {}
        for mode in ("text", "lines"):
            # loaded afresh per mode: its first run ("cold") starts with an empty cache
            tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
            best = 1e30
            cold = None
            n = 0
            for _ in range(a.repeat):
                t0 = time.perf_counter()
                if mode == "text":
                    n = len(tok.encode(text, add_special_tokens=False).ids)
                else:  # one batch call, serial (RAYON_NUM_THREADS=1): no Python loop counted
                    n = sum(len(e.ids) for e in tok.encode_batch(lines, add_special_tokens=False))
                dt = time.perf_counter() - t0
                best = min(best, dt)
                cold = dt if cold is None else cold
            hf[mode] = {"bench": "tokenizer", "impl": "tokenizers", "mode": mode, "tokenizer": d,
                        "text": path, "bytes": len(data), "tokens": n, "threads": 1,
                        "seconds": round(best, 6), "mb_per_s": round(len(data) / best / 1e6, 2),
                        "tokens_per_s": round(n / best),
                        "cold_mb_per_s": round(len(data) / cold / 1e6, 2)}
        out = subprocess.run([a.bench, d, path, "--repeat", str(a.repeat)], check=True,
                             capture_output=True, text=True).stdout
        for line in out.splitlines():
            z = json.loads(line)
            h = hf[z["mode"]]
            print(json.dumps(h))
            print(json.dumps(z))
            print(json.dumps({"bench": "tokenizer_ratio", "mode": z["mode"], "tokenizer": d,
                              "zoff_over_tokenizers": round(z["mb_per_s"] / h["mb_per_s"], 2),
                              "same_token_count": z["tokens"] == h["tokens"]}))
    if not a.text:
        os.unlink(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
