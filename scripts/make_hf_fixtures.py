#!/usr/bin/env python3
"""Makes the small Hugging Face fixtures that zoff's tests compare against (tests/fixtures/hf/).

Each fixture is a random-init model saved with transformers' own save_pretrained (config.json and
safetensors, sharded for one of them, stored in f32, bf16 or f16), plus reference.safetensors
with what transformers computes in fp32 from exactly the stored weights, on a fixed batch:
  tokens, targets (B*T, float-coded ints; -100 = ignored), logits (B*T, V), loss (1),
  and "grad_norm.<tensor name>" (1) for every parameter (names without GPT-2's "transformer."): the L2 norm of d(mean loss)/d(tensor).
Tests read them with no PyTorch (tests/test_model_hf.c). Norm weights and biases are randomized
too, so that a loader or kernel that ignored them would fail.

Usage: python3 scripts/make_hf_fixtures.py [OUT_DIR]   (needs torch, transformers, safetensors)
"""
import json
import os
import shutil
import sys

import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file

B, T = 2, 16


def fixtures():
    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=176,
                 vocab_size=128, max_position_embeddings=64, rms_norm_eps=1e-5)
    return [
        # Llama with grouped-query attention (4:2) and an untied head; f32, sharded in two
        ("llama_gqa", transformers.LlamaConfig(**small, num_key_value_heads=2,
                                               tie_word_embeddings=False, rope_theta=10000.0),
         transformers.LlamaForCausalLM, torch.float32, "150KB"),
        # Qwen2: q/k/v biases, tied embeddings, bf16 storage
        ("qwen2_bias", transformers.Qwen2Config(**small, num_key_value_heads=1,
                                                tie_word_embeddings=True, rope_theta=1000000.0,
                                                use_sliding_window=False),
         transformers.Qwen2ForCausalLM, torch.bfloat16, None),
        # Llama 3.x rope scaling (llama3 kind), f16 storage; a short original context so that the
        # low-, medium- and high-frequency branches are all taken at T = 16
        ("llama3_rope", transformers.LlamaConfig(
            **small, num_key_value_heads=4, tie_word_embeddings=False,
            rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 8},
            rope_theta=500000.0),
         transformers.LlamaForCausalLM, torch.float16, None),
        # Llama's attention_bias (q, k, v and o) and mlp_bias, tied embeddings, f32
        ("llama_biases", transformers.LlamaConfig(**small, num_key_value_heads=2,
                                                  attention_bias=True, mlp_bias=True,
                                                  tie_word_embeddings=True),
         transformers.LlamaForCausalLM, torch.float32, None),
        # GPT-2 with an untied head (tie_word_embeddings false: lm_head.weight of its own); no
        # dropout, so that the reference is the deterministic function zoff computes
        ("gpt2_untied", transformers.GPT2Config(
            n_embd=64, n_layer=2, n_head=4, vocab_size=128, n_positions=64,
            tie_word_embeddings=False, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            bos_token_id=0, eos_token_id=0),
         transformers.GPT2LMHeadModel, torch.float32, None),
    ]


def perturb(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:  # norm weights around 1, biases around 0
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.08 * torch.randn(p.shape, generator=gen))


def make(out_dir, name, cfg, cls, store_dtype, shard):
    d = os.path.join(out_dir, name)
    shutil.rmtree(d, ignore_errors=True)
    gen = torch.Generator().manual_seed(1234)
    model = cls(cfg).to(torch.float32)
    perturb(model, gen)
    model.to(store_dtype).save_pretrained(d, max_shard_size=shard or "50MB")
    if os.path.exists(os.path.join(d, "generation_config.json")):  # not the model's
        os.remove(os.path.join(d, "generation_config.json"))
    # the reference: fp32 arithmetic on exactly the stored (possibly rounded) weights
    model = cls.from_pretrained(d, dtype=torch.float32, attn_implementation="eager")
    model.eval()  # no dropout anywhere; gradients are computed all the same
    V = cfg.vocab_size
    tokens = torch.randint(0, V, (B, T), generator=gen)
    targets = torch.randint(0, V, (B, T), generator=gen)
    targets[0, 3] = -100
    targets[1, 0] = -100
    logits = model(input_ids=tokens).logits  # (B, T, V)
    loss = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-100)
    loss.backward()
    ref = {"tokens": tokens.reshape(-1).float(), "targets": targets.reshape(-1).float(),
           "logits": logits.detach().reshape(B * T, V).contiguous(),
           "loss": loss.detach().reshape(1)}
    seen = set()
    for pname, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        ref["grad_norm." + pname.removeprefix("transformer.")] = p.grad.norm().reshape(1)
    save_file(ref, os.path.join(d, "reference.safetensors"),
              metadata={"B": str(B), "T": str(T), "transformers": transformers.__version__,
                        "torch": torch.__version__})
    print(f"{name}: loss {loss.item():.6f}, files {sorted(os.listdir(d))}")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "hf")
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    for args in fixtures():
        make(out, *args)


if __name__ == "__main__":
    main()
