"""Continued pretraining (causal LM) on raw code: {"text": ...} rows.

    python -m codejax.main --config configs/pretrain.py:tiny --workdir /tmp/pt \
        --config.data.train_paths=corpus.jsonl --config.tokenizer.path=TOKENIZER_DIR

Variants: '' (defaults for a real model), 'tiny' (CPU/Colab, under a minute), and a PEFT
method ('lora', ..., also 'lora,tiny') for parameter-efficient continued pretraining.
"""
from codejax.config import apply_variants, base_config, make_tiny, peft_sft

VARIANTS = ["", "tiny", "lora", "lora,tiny"]


def _real(c):
    c.model.dtype = "bfloat16"
    c.data.seq_len = 2048


def get_config(arg=None):
    c = base_config()
    c.job = "pretrain"
    c.data.format = "text"
    c.data.text_field = "text"
    c.optim.lr = 1e-4
    c.train.steps = 5000
    return apply_variants(c, arg, __file__, tiny=make_tiny, real=_real, peft=peft_sft)
