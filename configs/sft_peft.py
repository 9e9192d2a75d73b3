"""Parameter-efficient SFT: LoRA by default, or any codejax.peft method, on a frozen base.

    python -m codejax.main --config configs/sft_peft.py:tiny --workdir /tmp/lora \
        --config.data.train_paths=train.jsonl --config.tokenizer.path=TOKENIZER_DIR
    python -m codejax.main --config configs/sft_peft.py:qlora --workdir runs/qlora \
        --config.model.hf_path=/models/qwen2.5-coder-1.5b --config.data.train_paths=/data/sft.jsonl

Variants: '' (LoRA r=16 on every linear layer of a real model), 'tiny', and '<method>' /
'<method>,tiny' for qlora, dora, prefix, prompt, adapter, ia3 ('<method>_tiny' is the same).
Checkpoints hold the adapter only; WORKDIR/adapter is an HF PEFT adapter
directory (for lora, qlora, dora, ia3, prompt) that `peft.PeftModel.from_pretrained` loads.
"""
from codejax.config import PEFT_VARIANTS, apply_variants, base_config, bfloat16, make_tiny, peft_sft

ALIASES = {f"{m}_tiny": f"{m},tiny" for m in PEFT_VARIANTS}
VARIANTS = ["", "tiny"] + [m for m in PEFT_VARIANTS if m != "lora"] + sorted(ALIASES) + sorted(ALIASES.values())


def get_config(arg=None):
    c = base_config()
    c.job = "sft"
    c.data.format = "alpaca"
    c.optim.weight_decay = 0.0
    c.optim.warmup_steps = 50
    c.train.steps = 1000
    return apply_variants(c, arg, __file__, tiny=make_tiny, real=bfloat16, peft=peft_sft, peft_default="lora",
                          aliases=ALIASES)
