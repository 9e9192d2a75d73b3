"""Model smoke demo: tokenizer -> tiny model -> HF directory -> load_hf -> forward pass.

    python -m codejax.demo --out /tmp/codejax_demo [--family qwen2]

It trains a byte-level BPE tokenizer on a slice of the local Python standard
library, builds a random tiny model of the chosen family, writes both as an
ordinary Hugging Face model directory, loads that directory back with
`codejax.models.load_hf`, and scores a code snippet. Everything runs on CPU
in well under a minute and nothing is downloaded.
"""
from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import transformers

from codejax.models import FAMILIES, init_params, load_hf, param_counts, save_hf, tiny_config
from codejax.tokenizer import train_stdlib_tokenizer

SNIPPET = '''def lcs(s1: str, s2: str) -> int:
    m, n = len(s1), len(s2)
    dp = [[0] * (n + 1) for _ in range(m + 1)]
'''


def run(out: str, family: str = "llama", vocab_size: int = 2048, max_files: int = 150) -> dict:
    """Build, save, reload and score; returns the figures it prints."""
    start = time.time()
    tok_dir = os.path.join(out, "tokenizer")
    tokenizer, stats = train_stdlib_tokenizer(tok_dir, vocab_size=vocab_size, max_files=max_files)
    print(f"tokenizer: {len(tokenizer)} tokens from {stats.files_read} stdlib files "
          f"({stats.bytes_read / 1e6:.1f} MB, {stats.files_skipped} skipped) -> {tok_dir}")

    cfg = tiny_config(family, vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
    model_dir = os.path.join(out, "model")
    save_hf(model_dir, cfg, init_params(cfg, jax.random.PRNGKey(0)), tokenizer=tokenizer)
    print(f"model: {family}, {param_counts(cfg)['total']:,} params -> {model_dir}")

    # The three lines a notebook user writes:
    model, params = load_hf(model_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    tokens = jnp.asarray([tokenizer(SNIPPET)["input_ids"]])
    logits = model.apply({"params": params}, tokens)

    log_probs = jax.nn.log_softmax(logits[0, :-1])
    nll = -jnp.take_along_axis(log_probs, tokens[0, 1:, None], axis=-1).mean()
    figures = dict(tokens=int(tokens.shape[1]), nll=float(nll), uniform_nll=float(np.log(cfg.vocab_size)),
                   seconds=time.time() - start)
    print(f"forward: {figures['tokens']} tokens, logits {tuple(logits.shape)}, "
          f"NLL {figures['nll']:.3f} nats/token (uniform: {figures['uniform_nll']:.3f}); "
          f"{figures['seconds']:.1f}s in all")
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="/tmp/codejax_demo", help="output directory")
    parser.add_argument("--family", default="llama", choices=FAMILIES)
    parser.add_argument("--vocab_size", type=int, default=2048)
    parser.add_argument("--max_files", type=int, default=150, help="stdlib files for the tokenizer")
    args = parser.parse_args(argv)
    run(args.out, args.family, args.vocab_size, args.max_files)


if __name__ == "__main__":
    main()
