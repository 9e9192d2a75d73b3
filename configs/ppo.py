"""PPO (the seed's RLHF stage): policy + value head, per-token KL penalty to the reference, GAE.

    python -m codejax.main --config configs/ppo.py --workdir /runs/ppo \
        --config.model.hf_path=/runs/sft/hf_model --config.rl.reward_model=/runs/rm \
        --config.rl.prompts_path=/data/prompts.jsonl
    python -m codejax.main --config configs/ppo.py:tiny --workdir /tmp/ppo --config.tokenizer.path=TOKENIZER_DIR

Rewards: any of rl.rewards (unit tests in the sandbox, ...), a reward model (rl.reward_model),
or several combined by rl.ensemble (min resists reward hacking). The KL coefficient adapts
toward rl.kl_target (Ziegler et al.) with rl.adaptive_kl.
Variants: '' (a real model with a reward model and unit tests), 'tiny' (CPU smoke run), a PEFT
method ('lora', ...; the value head stays shared), and combinations such as 'lora,tiny'.
"""
from codejax.config import apply_variants, base_config, bfloat16, make_tiny, peft_targets

VARIANTS = ["", "tiny", "lora,tiny"]


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
    c.rl.prompts_per_step = 16
    c.rl.max_new_tokens = 8
    c.rl.epochs = 2
    c.rl.minibatches = 2


def get_config(arg=None):
    c = base_config()
    c.job = "ppo"
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
    c.rl.prompts_per_step = 64
    c.rl.group_size = 1  # PPO's baseline is the value function, not a group
    c.rl.max_new_tokens = 512
    c.rl.temperature = 1.0
    c.rl.loss_agg = "dapo"
    c.rl.epochs = 4
    c.rl.minibatches = 4
    c.rl.kl_coef = 0.05
    c.rl.kl_estimator = "k1"
    c.rl.adaptive_kl = True
    c.rl.gamma = 1.0
    c.rl.lam = 0.95
    c.rl.vf_coef = 0.1
    c.rl.missing_eos_penalty = 1.0
    return apply_variants(c, arg, __file__, tiny=_tiny, real=bfloat16, peft=_peft)
