"""Agentic SFT: chat rows whose assistant turns call tools, with the tools' results in `tool` turns.

    python -m codejax.main --config configs/sft_tools.py:tiny --workdir /tmp/sft_tools   # built-in task
    python -m codejax.main --config configs/sft_tools.py --workdir /runs/sft_tools \
        --config.model.hf_path=/models/qwen2.5-coder-1.5b --config.data.train_paths=/data/trajectories.jsonl

Rows: {"messages": [...], "tools": [schemas]}; an assistant message may carry `tool_calls`
([{"name", "arguments"}] or OpenAI-shaped) and empty content (codejax/data/tools.py has the
format). The loss covers the assistant's turns and calls, never the tool turns. The built-in
rows (`data.train_paths='builtin:tools'`, the `tiny` default) are the arith_tool task's
trajectories (codejax/rl/environments.py): tool selection, tool use, recovery from a failed call
and two calls in one episode. configs/grpo_tools.py continues from the result with RL.
Variants: '' (a real model), 'tiny' (CPU/Colab), a PEFT method ('lora', 'lora,tiny').
"""
from codejax.config import apply_variants, base_config, bfloat16, make_tiny, peft_sft

VARIANTS = ["", "tiny", "lora,tiny"]


def _tiny(c):
    c.data.train_paths = c.data.train_paths or "builtin:tools"
    make_tiny(c)
    c.data.seq_len = 384  # the tools' schema in the system turn (~170 tokens here) plus up to three calls
    c.train.steps = 60
    c.train.eval_every = 30
    c.train.checkpoint_every = 30


def get_config(arg=None):
    c = base_config()
    c.job = "sft"
    c.data.format = "chat"
    c.optim.lr = 2e-5
    c.optim.warmup_steps = 50
    c.optim.weight_decay = 0.0
    c.train.steps = 1000
    return apply_variants(c, arg, __file__, tiny=_tiny, real=bfloat16, peft=peft_sft)
