"""Supervised fine-tuning on Alpaca-style {instruction, input, output} rows.

    python -m codejax.main --config configs/sft.py:tiny --workdir /tmp/sft \
        --config.data.train_paths=train.jsonl --config.tokenizer.path=TOKENIZER_DIR
    python -m codejax.main --config configs/sft.py --workdir gs://bucket/run \
        --config.model.hf_path=/models/qwen2.5-coder-1.5b --config.data.train_paths=/data/sft.jsonl

Variants: '' (defaults for a real model), 'tiny' (CPU/Colab, under a minute), and a PEFT
method ('lora', 'qlora', ..., also 'lora,tiny'): the method's settings of configs/sft_peft.py.
"""
from codejax.config import apply_variants, base_config, bfloat16, make_tiny, peft_sft

VARIANTS = ["", "tiny", "lora", "lora,tiny", "qlora,tiny"]


def get_config(arg=None):
    c = base_config()
    c.job = "sft"
    c.data.format = "alpaca"
    c.optim.lr = 2e-5
    c.optim.warmup_steps = 50
    c.optim.weight_decay = 0.0
    c.train.steps = 1000
    return apply_variants(c, arg, __file__, tiny=make_tiny, real=bfloat16, peft=peft_sft)
