"""GRPO (or RLOO) with execution rewards: sample a group of completions per prompt, run their unit tests
in the sandbox, and push the policy toward the completions that beat their group.

    python -m codejax.main --config configs/grpo_code.py --workdir /runs/grpo \
        --config.model.hf_path=/runs/sft/hf_model --config.rl.prompts_path=/data/prompts.jsonl
    python -m codejax.main --config configs/grpo_code.py:tiny --workdir /tmp/grpo \
        --config.tokenizer.path=TOKENIZER_DIR        # the built-in arithmetic-function task

Prompt rows: {"prompt": str, "tests": [asserts], "code_prefix": str, ...}; see codejax/jobs/rl.py.
RL needs a policy that already writes code (an SFT model): from a random model every reward is 0
and every group has zero spread (train/zero_spread_fraction = 1).
Variants: '' (a real model: 16 completions per prompt, DAPO-style token-level loss and
clip-higher, no KL), 'rloo', 'tiny' (CPU smoke run on the built-in environment), a PEFT
method ('lora', ...), and combinations such as 'rloo,tiny' or 'lora,tiny'.
"""
from codejax.config import apply_variants, base_config, bfloat16, make_tiny, peft_targets

VARIANTS = ["", "rloo", "tiny", "rloo,tiny", "lora,tiny"]


def _rloo(c):
    c.rl.algorithm = "rloo"
    c.rl.loss_agg = "grpo"
    c.rl.clip_eps_high = 0.0


def _peft(c, method):
    peft_targets(c, method)
    c.optim.lr = 1e-5  # an adapter takes larger steps than the full model's 1e-6


def _tiny(c):
    make_tiny(c)
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 0
    c.train.steps = 4
    c.train.eval_every = 2
    c.train.checkpoint_every = 2
    c.rl.prompts_per_step = 4
    c.rl.group_size = 4
    c.rl.max_new_tokens = 8
    c.rl.minibatches = 2
    c.rl.stop = ""


def get_config(arg=None):
    c = base_config()
    c.job = "grpo"
    c.optim.lr = 1e-6
    c.optim.warmup_steps = 10
    c.optim.weight_decay = 0.0
    c.optim.schedule = "constant"
    c.train.steps = 500
    c.train.eval_every = 50
    c.train.checkpoint_every = 50
    c.train.log_every = 1
    c.train.best_metric = "eval/reward"
    c.train.best_mode = "max"
    c.rl.rewards = "unit_tests"
    c.rl.prompts_per_step = 32
    c.rl.group_size = 16
    c.rl.max_new_tokens = 512
    c.rl.temperature = 1.0
    c.rl.loss_agg = "dapo"
    c.rl.clip_eps = 0.2
    c.rl.clip_eps_high = 0.28  # DAPO's clip-higher
    c.rl.minibatches = 4
    c.rl.stop = "\ndef |\nclass |\nif __name__|\nprint("
    return apply_variants(c, arg, __file__, tiny=_tiny, real=bfloat16, peft=_peft, extra={"rloo": _rloo})
