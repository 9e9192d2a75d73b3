"""AdamW with warmup + decay schedules, global-norm clipping and a weight-decay mask."""
from __future__ import annotations

import jax
import optax

# Leaves named like this are norm scales and biases: decaying them towards zero
# only fights the normalisation, so they are excluded (as in GPT-2/HF practice).
# PEFT's multiplicative scales ((IA)3, DoRA magnitudes) start at their identity,
# not at zero, so decaying them towards zero would be wrong too.
_NO_DECAY_LEAVES = ("scale", "bias", "ia3_scale", "lora_magnitude")


def learning_rate_schedule(lr: float, total_steps: int, warmup_steps: int = 0,
                           schedule: str = "cosine", min_lr_ratio: float = 0.0) -> optax.Schedule:
    """Linear warmup from 0 to `lr`, then cosine / linear decay to lr*min_lr_ratio, or constant."""
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))
    decay_steps = max(total_steps - warmup_steps, 1)
    end = lr * min_lr_ratio
    if schedule == "cosine":
        decay = optax.cosine_decay_schedule(lr, decay_steps, alpha=min_lr_ratio)
    elif schedule == "linear":
        decay = optax.linear_schedule(lr, end, decay_steps)
    elif schedule == "constant":
        decay = optax.constant_schedule(lr)
    else:
        raise ValueError(f"optim.schedule={schedule!r}; expected cosine, linear or constant")
    if warmup_steps == 0:
        return decay
    warmup = optax.linear_schedule(0.0, lr, warmup_steps)
    return optax.join_schedules([warmup, decay], [warmup_steps])


def decay_mask(params):
    """True for leaves that get weight decay: everything but norm scales and biases."""
    def keep(path, _):
        name = str(getattr(path[-1], "key", ""))
        return name not in _NO_DECAY_LEAVES and not name.endswith("_bias")
    return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(optim_cfg, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimizer for `config.optim` and its learning-rate schedule."""
    schedule = learning_rate_schedule(optim_cfg.lr, total_steps, optim_cfg.warmup_steps,
                                      optim_cfg.schedule, optim_cfg.min_lr_ratio)
    parts = []
    if optim_cfg.clip_norm > 0:
        parts.append(optax.clip_by_global_norm(optim_cfg.clip_norm))
    parts.append(optax.adamw(schedule, b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps,
                             weight_decay=optim_cfg.weight_decay, mask=decay_mask))
    return optax.chain(*parts), schedule
