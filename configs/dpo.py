"""Direct preference optimisation and its variants on preference pairs.

    python -m codejax.main --config configs/dpo.py --workdir /runs/dpo \
        --config.model.hf_path=/runs/sft/hf_model --config.data.train_paths=/data/prefs.jsonl
    python -m codejax.main --config configs/dpo.py:lora --workdir /runs/dpo_lora ...   # reference = base, adapters off
    python -m codejax.main --config configs/dpo.py:tiny --workdir /tmp/dpo \
        --config.data.train_paths=pairs.jsonl --config.tokenizer.path=TOKENIZER_DIR

preference.loss_type: sigmoid (DPO) | ipo | hinge | robust (with label_smoothing) | simpo | orpo.
The reference is the initial model: a frozen copy (full fine-tuning), the base with the
adapters off (PEFT), or log-probs computed once up front (preference.precompute_ref=True).
Variants: '' (full fine-tuning of a real model), 'lora' (or another PEFT method), 'tiny' (CPU,
under a minute), and combinations such as 'lora,tiny'.
"""
from codejax.config import apply_variants, base_config, bfloat16, make_tiny, peft_targets

VARIANTS = ["", "lora", "tiny", "lora,tiny"]


def _peft(c, method):
    peft_targets(c, method)
    c.optim.lr = 5e-6  # LoRA DPO: ten times the full fine-tuning rate


def _tiny(c):
    make_tiny(c)
    c.data.seq_len = 64
    c.data.batch_size = 16
    c.data.eval_fraction = 0.1
    c.optim.lr = 1e-3
    c.train.steps = 40
    c.train.eval_every = 20
    c.train.checkpoint_every = 20


def get_config(arg=None):
    c = base_config()
    c.job = "dpo"
    c.data.pack = False
    c.data.seq_len = 1024
    c.data.batch_size = 32
    c.optim.lr = 5e-7  # DPO's usual full fine-tuning rate (Rafailov et al. / Zephyr); LoRA below
    c.optim.warmup_steps = 20
    c.optim.weight_decay = 0.0
    c.train.steps = 1000
    c.train.best_metric = "eval/loss"
    c.preference.loss_type = "sigmoid"
    c.preference.beta = 0.1
    return apply_variants(c, arg, __file__, tiny=_tiny, real=bfloat16, peft=_peft)
