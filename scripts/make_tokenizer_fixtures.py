#!/usr/bin/env python3
"""Writes the tokenizer fixtures in tests/fixtures/tokenizer/ from Hugging Face `tokenizers`.

Trains small BPE tokenizers offline (no network) on GPL-3 text plus the test corpus, in five
flavours that zoff's C tokenizer must match id for id:
  gpt2      byte-level, ByteLevel pre-tokenizer with the GPT-2 split regex
  llama3    byte-level, Split(Llama-3 regex, isolated) + ByteLevel(use_regex=false), ignore_merges
  qwen2     byte-level as Qwen2: NFC normalizer, Split(Qwen2 regex: single digits) + ByteLevel
  spm       SentencePiece-style (Llama 2 / Mistral): Prepend+Replace normalizer, byte_fallback,
            a vocabulary trained within words as SentencePiece does
  metaspace the same kind behind a Metaspace(prepend_scheme=first) pre-tokenizer, with a
            vocabulary whose merges span words
Each gets NAME/tokenizer.json and NAME/expected.tsv: one line per test case,
  hex(input bytes) TAB ids (space separated) TAB hex(decode(ids, skip_special_tokens=False)),
or "=" for the last when decoding gives back the input bytes.
Inputs that are not valid UTF-8 are given to `tokenizers` as bytes.decode('utf-8', 'replace')
(what the C tokenizer promises to do with them). Usage: pip install tokenizers; run from
anywhere: python3 scripts/make_tokenizer_fixtures.py. The SentencePiece-style training breaks
ties between equally frequent pairs differently from run to run, so the spm and metaspace
files change when regenerated (the ids in each expected.tsv always match its tokenizer.json).
"""
import json
import os
import random
import sys

from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, trainers)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
# Options for a larger check that is not committed (see main): cases and vocabulary scale.
OPTS = {"random": 60, "vocab_scale": 1.0}

GPT2_PATTERN = (r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

CASES = [
    b"Hello world",
    b"Hello, world! How are you doing today?",
    b"The quick brown fox jumps over the lazy dog.",
    b"I'm sure you've seen it; they'll say we'd DON'T, It'S, he'LL",
    b"  leading spaces and trailing spaces   ",
    b"tabs\tand\t\tmore\ttabs",
    b"line one\nline two\r\nline three\n\n\nafter blank lines\n",
    b"    indented code\n        more indented\n",
    b"\n",
    b" ",
    b"   ",
    b"",
    b"a",
    b"1234567890 3.14159 1,000,000 -42 +7e10 0x1F 2024-05-20",
    b"numbers123mixed456with789letters",
    "Grüße aus München, schöne Straße".encode(),
    "Ça va très bien, merci à vous. L'été français".encode(),
    "Привет, как дела? Всё хорошо.".encode(),
    "Καλημέρα κόσμε".encode(),
    "مرحبا بالعالم".encode(),
    "שלום עולם".encode(),
    "नमस्ते दुनिया".encode(),
    "你好，世界！今天天气很好。".encode(),
    "こんにちは世界、カタカナとひらがな".encode(),
    "안녕하세요 세계".encode(),
    "สวัสดีชาวโลก".encode(),
    "Emoji: 😀 👍🏽 👨‍👩‍👧‍👦 🇩🇪 ❤️ 🚀🚀🚀".encode(),
    "combining e\u0301 and a\u0308 and \u00e9".encode(),
    "non-breaking\u00a0space and ideographic\u3000space and en\u2002space".encode(),
    "zero\u200bwidth and soft\u00adhyphen".encode(),
    b"def f(x):\n    return x * 2  # double\n\nprint(f(21))\n",
    b"int main(void) { for (int i = 0; i < 10; i++) printf(\"%d\\n\", i); return 0; }",
    b"{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}",
    b"<html><body class=\"x\">&amp; &lt;tag&gt;</body></html>",
    b"!!! ??? ... --- *** ### $$$ %%% ^^^ &&& ((( ))) [[[ ]]] {{{ }}}",
    b"https://example.com/path?query=1&other=two#frag",
    b"user@example.org, +1 (555) 123-4567",
    b"Hello<|endoftext|>world",
    b"<|endoftext|>",
    b"<|endoftext|><|endoftext|> <|endoftext|> x",
    b"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
    b"<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n",
    b"<s>[INST] question [/INST] answer</s>",
    b"almost special <|endoftext| and <|im_start and <s and </s",
    b"<unk> token text",
    b"invalid \xff byte",
    b"truncated \xc3",
    b"overlong \xc0\xaf and \xe0\x80\xaf",
    b"surrogate \xed\xa0\x80 half",
    b"lone continuation \x80\x81\x82 bytes",
    b"truncated 3-byte \xe2\x82 and 4-byte \xf0\x9f\x98 ends",
    b"\xf4\x90\x80\x80 beyond U+10FFFF and \xf5\xff",
    b"control \x01\x02\x1b[31m chars\x7f",
    b"nul\x00inside",
    b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    b"                                                                end",
    b"MixedCASE camelCaseWords snake_case_words kebab-case-words ALLCAPS",
    "Ünïcödé ÄÖÜ ß ẞ ﬁ ﬀ Ⅻ ½ ² ① ١٢٣ ٤".encode(),
    "added: x <mask> y, x\u3000<mask>,   <mask>, a [END]  \tb, [END]\u00a0c".encode(),
    b"say hello world twice hello world, not hello worldwide nor hello  world",
    "decomposed: Cafe\u0301 Zu\u0308rich A\u030a \u1100\u1161\u11a8 \u212b \u2126 q\u0307\u0323".encode(),
]


def read_gpl():
    path = "/usr/share/common-licenses/GPL-3"
    with open(path, encoding="utf-8") as f:
        return f.read()


def training_text():
    lines = read_gpl().split("\n")
    extra = [c.decode("utf-8", "replace") for c in CASES]
    return lines + extra * 3


# Random cases: pieces drawn from these (many scripts, whitespace, digits, special and added
# tokens), and random byte strings (invalid UTF-8).
PIECES = ["a", "Z", "hello", "world", " ", "  ", "\t", "\n", "\r\n", "\n\n ", "'s", "'LL",
          "123", "4567", "3.5", "!", "?!", "...", "-", "_x", "\u4f60", "\u597d", "\U0001f600",
          "\U0001f44d\U0001f3fd", "\u00e9", "e\u0301", "\u00a0", "\u3000", "\u2028", "<|endoftext|>",
          "<|im_start|>", "<|eot_id|>", "<s>", "</s>", "<mask>", " <mask> ", "[END] ", "hello world",
          "\u00fcber", "\u03a9", "x\u200b", "\ufb01", "\u0663", "\u0928\u092e", "\u0e2a", "\x00",
          "\u2581", "<0x41>", "<unk>"]


def random_cases(n_text, n_bytes, seed=1234):
    rng = random.Random(seed)
    out = []
    for _ in range(n_text):
        out.append("".join(rng.choice(PIECES) for _ in range(rng.randint(1, 14))).encode())
    alphabet = [0x20, 0x61, 0x41, 0x0a] + list(range(0x80, 0x100))
    for _ in range(n_bytes):
        out.append(bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 16))))
    return out


def as_text(case):
    return case.decode("utf-8", "replace")


def write_expected(name, tok):
    d = os.path.join(OPTS.get("out", OUT), name)
    os.makedirs(d, exist_ok=True)
    tok.save(os.path.join(d, "tokenizer.json"), pretty=False)
    # Reload from the file: what the C side reads is what is checked.
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    cases = list(CASES)
    # Whole multi-line documents too, so that splits across lines are covered.
    cases.append(b"\n".join(CASES[:20]))
    cases.append(b"\n".join(CASES[20:]))
    cases += random_cases(OPTS["random"], OPTS["random"] // 5)
    with open(os.path.join(d, "expected.tsv"), "w") as f:
        for case in cases:
            ids = tok.encode(as_text(case), add_special_tokens=False).ids
            dec = tok.decode(ids, skip_special_tokens=False).encode("utf-8")
            dec = "=" if dec == case else dec.hex()  # "=": decoding gives back the input
            f.write("%s\t%s\t%s\n" % (case.hex(), " ".join(map(str, ids)), dec))
    print("%s: vocab %d, %d cases" % (name, tok.get_vocab_size(), len(cases)))


def add_extra_tokens(tok):
    """Added tokens with lstrip/rstrip, and one matched in the normalized text."""
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True, normalized=False)])
    tok.add_tokens([AddedToken("[END]", rstrip=True, normalized=False),
                    AddedToken("hello world", normalized=True)])


def byte_level(name, pre, ignore_merges, specials, normalizer=None):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=int(1200 * OPTS["vocab_scale"]), special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training_text(), trainer)
    add_extra_tokens(tok)
    write_expected(name, tok)


def spm_tokenizer(split_words):
    """A SentencePiece-style BPE. split_words trains as SentencePiece does, never merging across
    a word boundary (every token with U+2581 has it only in front, as in Llama 2's vocabulary);
    without it merges may span words (e.g. "e\u2581"), which the C side must also handle."""
    byte_tokens = ["<0x%02X>" % b for b in range(256)]
    specials = ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"),
                                           normalizers.Replace(" ", "\u2581")])
    if split_words:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581",
                                                     prepend_scheme="never", split=True)
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    # limit_alphabet leaves rare characters out, so that they take the byte fallback.
    trainer = trainers.BpeTrainer(vocab_size=int(1000 * OPTS["vocab_scale"]), special_tokens=specials + byte_tokens,
                                  limit_alphabet=120, show_progress=False)
    tok.train_from_iterator(training_text(), trainer)
    add_extra_tokens(tok)
    # As in Llama 2's file: the byte tokens are ordinary vocabulary, not added tokens, and no
    # pre-tokenizer (the training split above is not part of the tokenizer).
    doc = json.loads(tok.to_str())
    doc["added_tokens"] = [t for t in doc["added_tokens"] if t["content"] not in byte_tokens]
    doc["pre_tokenizer"] = None
    return doc


def spm_style():
    write_expected("spm", Tokenizer.from_str(json.dumps(spm_tokenizer(True))))
    # A vocabulary with merges across words, behind a Metaspace pre-tokenizer (the newer
    # Llama/Mistral conversions).
    doc = spm_tokenizer(False)
    doc["normalizer"] = None
    doc["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581",
                            "prepend_scheme": "first", "split": False}
    doc["decoder"] = {"type": "Metaspace", "replacement": "\u2581",
                      "prepend_scheme": "first", "split": False}
    write_expected("metaspace", Tokenizer.from_str(json.dumps(doc)))


def main():
    # --out DIR --random N --vocab-scale X: a bigger check than the committed fixtures, e.g.
    #   make_tokenizer_fixtures.py --out /tmp/tok --random 3000 --vocab-scale 4
    #   build/release/tests/test_text_tokenizer /tmp/tok
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--random", type=int, default=60)
    ap.add_argument("--vocab-scale", type=float, default=1.0)
    a = ap.parse_args()
    OPTS.update(out=a.out, random=a.random, vocab_scale=a.vocab_scale)
    byte_level("gpt2", pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), False,
               ["<|endoftext|>"])
    llama3_specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                       "<|end_header_id|>", "<|eot_id|>", "<|im_start|>", "<|im_end|>"]
    byte_level("llama3", pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]), True,
        llama3_specials)
    byte_level("qwen2", pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]), False,
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], normalizers.NFC())
    spm_style()
    return 0


if __name__ == "__main__":
    sys.exit(main())
