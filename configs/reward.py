"""Train a reward model (Bradley-Terry, scalar head on the last token) on preference pairs.

    python -m codejax.main --config configs/reward.py --workdir /runs/rm \
        --config.model.hf_path=/models/qwen2.5-coder-1.5b --config.data.train_paths=/data/prefs.jsonl
    python -m codejax.main --config configs/reward.py:tiny --workdir /tmp/rm \
        --config.data.train_paths=pairs.jsonl --config.tokenizer.path=TOKENIZER_DIR

Rows: {prompt, chosen, rejected} (text or chat messages) or {chosen, rejected} conversations;
see codejax/data/pairs.py. Logs train/ and eval/ accuracy, rewards and margin.
Variants: '' (a real model: lr 1e-5, 1 epoch-ish), 'tiny' (CPU, under a minute), a PEFT method
('lora', ...), and combinations such as 'lora,tiny'.
"""
from codejax.config import apply_variants, base_config, bfloat16, make_tiny, peft_targets

VARIANTS = ["", "tiny", "lora,tiny"]


def _peft(c, method):
    peft_targets(c, method)
    c.optim.lr = 1e-4  # the adapter (and the score head) take larger steps than the full model


def _tiny(c):
    make_tiny(c)
    c.data.seq_len = 64
    c.data.batch_size = 16
    c.data.eval_fraction = 0.1
    c.optim.lr = 1e-3
    c.train.steps = 60
    c.train.eval_every = 20
    c.train.checkpoint_every = 30


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
    return apply_variants(c, arg, __file__, tiny=_tiny, real=bfloat16, peft=_peft)
