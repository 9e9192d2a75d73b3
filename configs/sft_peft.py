"""Parameter-efficient SFT: LoRA by default, or any codejax.peft method, on a frozen base.

    python -m codejax.main --config configs/sft_peft.py:tiny --workdir /tmp/lora \
        --config.data.train_paths=train.jsonl --config.tokenizer.path=TOKENIZER_DIR
    python -m codejax.main --config configs/sft_peft.py:qlora --workdir runs/qlora \
        --config.model.hf_path=/models/qwen2.5-coder-1.5b --config.data.train_paths=/data/sft.jsonl

Variants: '' (LoRA r=16 on every linear layer of a real model), 'tiny', and
'<method>' / '<method>_tiny' for qlora, dora, prefix, prompt, adapter, ia3.
Checkpoints hold the adapter only; WORKDIR/adapter is an HF PEFT adapter
directory (for lora, qlora, dora, ia3, prompt) that `peft.PeftModel.from_pretrained` loads.
"""
from codejax.config import base_config, make_tiny, unknown_variant

# Learning rates that work for each method (prompt-like methods want far larger steps than LoRA).
LR = {"lora": 2e-4, "qlora": 2e-4, "dora": 2e-4, "prefix": 1e-2, "prompt": 3e-2, "adapter": 1e-3, "ia3": 3e-3}
TINY_LR = {"lora": 1e-2, "qlora": 1e-2, "dora": 1e-2, "prefix": 1e-2, "prompt": 3e-2, "adapter": 3e-3, "ia3": 1e-2}
VARIANTS = ["", "tiny"] + [f"{m}{suffix}" for m in LR if m != "lora" for suffix in ("", "_tiny")]


def get_config(arg=None):
    if (arg or "") not in VARIANTS:
        raise unknown_variant(__file__, arg, VARIANTS)
    name = arg or ""
    tiny = name == "tiny" or name.endswith("_tiny")
    method = name.removesuffix("_tiny").removesuffix("tiny") or "lora"
    c = base_config()
    c.job = "sft"
    c.data.format = "alpaca"
    c.peft.method = method
    c.peft.rank, c.peft.alpha = 16, 32.0
    c.peft.target_modules = "all-linear"
    c.optim.weight_decay = 0.0
    c.optim.warmup_steps = 50
    c.train.steps = 1000
    if tiny:
        make_tiny(c)
        c.optim.lr = TINY_LR[method]
        c.peft.num_virtual_tokens = 8
        return c
    c.model.dtype = "bfloat16"
    c.optim.lr = LR[method]
    return c
