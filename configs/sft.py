"""Supervised fine-tuning on Alpaca-style {instruction, input, output} rows.

    python -m codejax.main --config configs/sft.py:tiny --workdir /tmp/sft \
        --config.data.train_paths=train.jsonl --config.tokenizer.path=TOKENIZER_DIR
    python -m codejax.main --config configs/sft.py --workdir gs://bucket/run \
        --config.model.hf_path=/models/qwen2.5-coder-1.5b --config.data.train_paths=/data/sft.jsonl

Variants: '' (defaults for a real model), 'tiny' (CPU/Colab, under a minute).
"""
from codejax.config import base_config, make_tiny, unknown_variant


def get_config(arg=None):
    c = base_config()
    c.job = "sft"
    c.data.format = "alpaca"
    c.optim.lr = 2e-5
    c.optim.warmup_steps = 50
    c.optim.weight_decay = 0.0
    c.train.steps = 1000
    if arg in (None, ""):
        c.model.dtype = "bfloat16"
        return c
    if arg == "tiny":
        return make_tiny(c)
    raise unknown_variant(__file__, arg, ["", "tiny"])
