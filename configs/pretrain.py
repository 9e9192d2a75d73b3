"""Continued pretraining (causal LM) on raw code: {"text": ...} rows.

    python -m codejax.main --config configs/pretrain.py:tiny --workdir /tmp/pt \
        --config.data.train_paths=corpus.jsonl --config.tokenizer.path=TOKENIZER_DIR

Variants: '' (defaults for a real model), 'tiny' (CPU/Colab, under a minute).
"""
from codejax.config import base_config, make_tiny, unknown_variant


def get_config(arg=None):
    c = base_config()
    c.job = "pretrain"
    c.data.format = "text"
    c.data.text_field = "text"
    c.optim.lr = 1e-4
    c.train.steps = 5000
    if arg in (None, ""):
        c.model.dtype = "bfloat16"
        c.data.seq_len = 2048
        return c
    if arg == "tiny":
        return make_tiny(c)
    raise unknown_variant(__file__, arg, ["", "tiny"])
