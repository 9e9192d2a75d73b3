"""GRPO over multi-turn episodes: the policy calls a tool (the `python` interpreter in the sandbox), reads
its output and answers; the episode's reward is rl.rewards on the final answer plus the environment's.

    python -m codejax.main --config configs/grpo_tools.py:tiny --workdir /tmp/grpo_tools   # built-in task
    python -m codejax.main --config configs/grpo_tools.py --workdir /runs/grpo_tools \
        --config.model.hf_path=/runs/sft_tools/hf_model --config.rl.prompts_path=/data/prompts.jsonl

The built-in task (rl.builtin_task='arith_tool'): "What is 47 * 29?", scored by `exact_answer`;
start from an agentic-SFT model (configs/sft_tools.py), since a random policy never calls a tool.
rl.env='unit_tests' instead: each turn is a solution, the sandbox's test feedback comes back,
up to rl.max_turns tries (rows with `tests`; rl.rewards='' lets the environment's reward stand alone).
Tool replies are in the episode but masked out of the loss; train/tool_calls and train/turns are
the per-episode means, train/time/tool_s the time spent running tools.
Variants: '' (a real model), 'tiny' (CPU smoke run, no flags needed), 'lora,tiny'.
"""
from codejax.config import apply_variants, base_config, bfloat16, make_tiny, peft_targets

VARIANTS = ["", "tiny", "lora,tiny"]


def _peft(c, method):
    peft_targets(c, method)
    c.optim.lr = 1e-5


def _tiny(c):
    make_tiny(c)
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 0
    c.train.steps = 4
    c.train.eval_every = 2
    c.train.checkpoint_every = 2
    c.rl.prompts_per_step = 4
    c.rl.group_size = 4
    c.rl.max_new_tokens = 64
    c.rl.max_turns = 3
    c.rl.max_reply_tokens = 32
    c.rl.minibatches = 2
    c.rl.eval_fraction = 0.02  # ~40 held-out prompts: every eval runs their episodes, tools included


def get_config(arg=None):
    c = base_config()
    c.job = "grpo"
    c.optim.lr = 1e-6
    c.optim.warmup_steps = 10
    c.optim.weight_decay = 0.0
    c.optim.schedule = "constant"
    c.train.steps = 300
    c.train.eval_every = 25
    c.train.checkpoint_every = 25
    c.train.log_every = 1
    c.train.best_metric = "eval/reward"
    c.train.best_mode = "max"
    c.rl.env = "python"
    c.rl.builtin_task = "arith_tool"
    c.rl.rewards = "exact_answer"
    c.rl.prompts_per_step = 16
    c.rl.group_size = 8
    c.rl.max_new_tokens = 512
    c.rl.max_turns = 4
    c.rl.temperature = 1.0
    c.rl.loss_agg = "dapo"
    c.rl.clip_eps = 0.2
    c.rl.clip_eps_high = 0.28
    c.rl.minibatches = 2
    return apply_variants(c, arg, __file__, tiny=_tiny, real=bfloat16, peft=_peft)
