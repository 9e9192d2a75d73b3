"""Train a reward model (Bradley-Terry, scalar head on the last token) on preference pairs.

    python -m codejax.main --config configs/reward.py --workdir /runs/rm \
        --config.model.hf_path=/models/qwen2.5-coder-1.5b --config.data.train_paths=/data/prefs.jsonl
    python -m codejax.main --config configs/reward.py:tiny --workdir /tmp/rm \
        --config.data.train_paths=pairs.jsonl --config.tokenizer.path=TOKENIZER_DIR

Rows: {prompt, chosen, rejected} (text or chat messages) or {chosen, rejected} conversations;
see codejax/rl/preference_data.py. Logs train/ and eval/ accuracy, rewards and margin.
Variants: '' (a real model: lr 1e-5, 1 epoch-ish), 'tiny' (CPU, under a minute).
"""
from codejax.config import base_config, make_tiny, unknown_variant


def get_config(arg=None):
    c = base_config()
    c.job = "reward"
    c.data.pack = False  # one pair per row; the head reads each sequence's last token
    c.data.seq_len = 1024
    c.data.batch_size = 32
    c.optim.lr = 1e-5
    c.optim.warmup_steps = 20
    c.optim.weight_decay = 0.0
    c.train.steps = 1000
    c.train.best_metric = "eval/accuracy"
    c.train.best_mode = "max"
    c.preference.center_coef = 0.01
    if arg in (None, ""):
        c.model.dtype = "bfloat16"
        return c
    if arg == "tiny":
        make_tiny(c)
        c.data.seq_len = 64
        c.data.batch_size = 16
        c.data.eval_fraction = 0.1
        c.optim.lr = 1e-3
        c.train.steps = 60
        c.train.eval_every = 20
        c.train.checkpoint_every = 30
        return c
    raise unknown_variant(__file__, arg, ["", "tiny"])
