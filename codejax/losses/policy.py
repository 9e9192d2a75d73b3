"""Policy-gradient losses for PPO and GRPO/RLOO as pure functions of token log-probs.

Token tensors are [batch, T] over completion positions, with a float `mask`
[batch, T] that is 1 on the tokens that count (0 on padding). `logp` is the
current policy's log-prob of each sampled token, `old_logp` the sampling
policy's (the rollout), `ref_logp` the reference model's; all fp32.

A GRPO step composes them:

    adv = group_advantages(rewards, G)          # or rloo_advantages(rewards, G)
    pg, metrics = clipped_policy_loss(logp, old_logp, adv, mask, loss_agg="dapo")
    kl = aggregate(kl_estimate(logp, ref_logp), mask, "dapo")
    loss = pg + beta * kl

and a PPO step adds `gae` over per-token rewards (the KL penalty folded into
them), `whiten`, `clipped_value_loss` and a KL controller for beta.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

KL_ESTIMATORS = ("k1", "k2", "k3")
LOSS_AGGS = ("grpo", "bnpo", "dapo", "dr_grpo")


def _masked(x, mask):
    """x where mask is non-zero, else 0: padding may hold inf/NaN (and so may its gradient), so
    select rather than multiply before anything non-linear touches it."""
    return jnp.where(mask != 0, x, 0.0)


def kl_estimate(logp, ref_logp, estimator: str = "k3"):
    """Per-token estimate of KL(pi || ref) from tokens sampled from pi (Schulman, "Approximating KL").

    With r = ref_logp - logp (the log of ref/pi at the sampled token):
        k1 = -r = logp - ref_logp       unbiased, high variance, can be negative
        k2 = r^2 / 2                     biased, low variance, >= 0
        k3 = exp(r) - 1 - r              unbiased, low variance, >= 0 (the GRPO paper's)
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"estimator={estimator!r}; expected one of {KL_ESTIMATORS}")
    r = ref_logp - logp
    if estimator == "k1":
        return -r
    if estimator == "k2":
        return 0.5 * jnp.square(r)
    return jnp.expm1(r) - r


def aggregate(per_token, mask, loss_agg: str = "grpo", max_tokens: int | None = None,
              num_items=None):
    """Reduce per-token values [batch, T] to a scalar, counting only masked tokens.

    With S_b = sum_t mask[b,t] x[b,t] and n_b = sum_t mask[b,t] (B = batch):
        grpo     (1/B) sum_b S_b / max(n_b, 1)     sequence mean of token means (GRPO paper);
                                                   long completions weigh less per token
        bnpo     sum_b S_b / max(sum_b n_b, 1)     token mean over this batch
        dapo     sum_b S_b / num_items             token mean over the whole generation batch
                                                   (DAPO): num_items = its total mask tokens
                                                   across minibatches / accumulation steps /
                                                   hosts, so every token weighs the same in the
                                                   accumulated gradient. Without num_items it
                                                   equals bnpo.
        dr_grpo  sum_b S_b / (B * max_tokens)      Dr. GRPO: a constant denominator (max_tokens
                                                   = the max completion length), no length bias

    As in TRL's GRPOTrainer. grpo, bnpo and dr_grpo normalise per call: averaging them over
    equal-sized microbatches is exact for grpo and dr_grpo; only dapo normalises globally.
    """
    if loss_agg not in LOSS_AGGS:
        raise ValueError(f"loss_agg={loss_agg!r}; expected one of {LOSS_AGGS}")
    if num_items is not None and loss_agg != "dapo":
        raise ValueError(f"num_items is the global token count of loss_agg='dapo'; got loss_agg={loss_agg!r}")
    mask = mask.astype(jnp.float32)
    x = _masked(per_token.astype(jnp.float32), mask) * mask
    if loss_agg == "grpo":
        return jnp.mean(jnp.sum(x, -1) / jnp.maximum(jnp.sum(mask, -1), 1.0))
    if loss_agg == "dr_grpo":
        if max_tokens is None:
            raise ValueError("loss_agg='dr_grpo' needs max_tokens (the max completion length)")
        return jnp.sum(x) / (x.shape[0] * max_tokens)
    if loss_agg == "dapo" and num_items is not None:
        return jnp.sum(x) / num_items
    return jnp.sum(x) / jnp.maximum(jnp.sum(mask), 1.0)


def _token_mean(x, mask):
    mask = mask.astype(jnp.float32)
    return jnp.sum(_masked(x.astype(jnp.float32), mask) * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def clipped_policy_loss(logp, old_logp, advantages, mask, clip_eps: float = 0.2,
                        clip_eps_high: float | None = None, loss_agg: str = "grpo",
                        max_tokens: int | None = None, num_items=None, token_weights=None):
    """PPO's clipped surrogate, aggregated over tokens; returns (loss, metrics).

        ratio  = exp(logp - old_logp)
        loss_t = -min(ratio A, clip(ratio, 1 - eps_low, 1 + eps_high) A)

    eps_low = clip_eps, eps_high = clip_eps_high or clip_eps (DAPO's clip-higher uses
    eps_high > eps_low). advantages: [batch] (one per sequence, broadcast over its tokens)
    or [batch, T]. Aggregation: see `aggregate`. The gradient is zero on tokens clipped in
    the advantage's direction (ratio > 1 + eps_high with A > 0, ratio < 1 - eps_low with A < 0).

    token_weights [batch, T] (no gradient) scale each token's surrogate: the truncated importance
    weights min(pi_old / pi_sampler, cap) when the sampler's log-probs differ from the trainer's.

    metrics (token means over the mask, no gradient): clip_frac/low and clip_frac/high
    (tokens clipped at each side, as counted above), clip_frac/region (either), ratio/mean,
    approx_kl (k3 estimate of the KL between the old and the current policy).
    """
    eps_low = clip_eps
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    mask = mask.astype(jnp.float32)
    advantages = advantages.astype(jnp.float32)
    if advantages.ndim == 1:
        advantages = advantages[:, None]
    log_ratio = _masked(logp.astype(jnp.float32) - old_logp.astype(jnp.float32), mask)
    ratio = jnp.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high) * advantages
    per_token = -jnp.minimum(unclipped, clipped)
    if token_weights is not None:
        per_token = per_token * jax.lax.stop_gradient(_masked(token_weights.astype(jnp.float32), mask))
    loss = aggregate(per_token, mask, loss_agg, max_tokens, num_items)

    ratio_sg, adv = jax.lax.stop_gradient(ratio), jax.lax.stop_gradient(advantages)
    low = (ratio_sg < 1.0 - eps_low) & (adv < 0)
    high = (ratio_sg > 1.0 + eps_high) & (adv > 0)
    metrics = {
        "clip_frac/low": _token_mean(low, mask),
        "clip_frac/high": _token_mean(high, mask),
        "clip_frac/region": _token_mean(low | high, mask),
        "ratio/mean": _token_mean(ratio_sg, mask),
        "approx_kl": _token_mean(kl_estimate(jax.lax.stop_gradient(logp), old_logp, "k3"), mask),
    }
    return loss, metrics


SCALE_REWARDS = ("group", "batch", "none")


def _finite_std(x, valid, axis, keepdims):
    """The sample standard deviation (ddof=1, as torch.std) of x where valid; 0 with fewer than two values."""
    n = jnp.sum(valid, axis=axis, keepdims=True)
    mean = jnp.sum(jnp.where(valid, x, 0.0), axis=axis, keepdims=True) / jnp.maximum(n, 1)
    ss = jnp.sum(jnp.where(valid, jnp.square(x - mean), 0.0), axis=axis, keepdims=True)
    std = jnp.sqrt(ss / jnp.maximum(n - 1, 1))
    return std if keepdims else jnp.squeeze(std, axis)


def group_advantages(rewards, group_size: int, eps: float = 1e-4, scale: str = "group"):
    """GRPO advantages over groups of `group_size` consecutive rows: r minus its group's mean,
    divided by a standard deviation (+ eps) that `scale` picks, as TRL's `scale_rewards`:

        group   the std of its group (the GRPO paper)
        batch   the std of the whole batch; the group means still centre (TRL's "batch")
        none    no division (Dr. GRPO)

    Both stds are sample stds (ddof=1, torch.std's and so TRL's). rewards [n_groups * group_size]
    -> same shape. NaN rewards (a failed reward call) are left out of every statistic and get
    advantage 0; so does every row of a group with fewer than two finite rewards (no baseline).
    """
    if scale not in SCALE_REWARDS:
        raise ValueError(f"scale={scale!r}; expected one of {SCALE_REWARDS}")
    groups = rewards.astype(jnp.float32).reshape(-1, group_size)
    valid = ~jnp.isnan(groups)
    n = jnp.sum(valid, axis=1, keepdims=True)
    mean = jnp.sum(jnp.where(valid, groups, 0.0), axis=1, keepdims=True) / jnp.maximum(n, 1)
    centred = groups - mean
    if scale == "group":
        centred = centred / (_finite_std(groups, valid, 1, True) + eps)
    elif scale == "batch":
        centred = centred / (_finite_std(groups.reshape(-1), valid.reshape(-1), 0, False) + eps)
    return jnp.where(valid & (n >= 2), centred, 0.0).reshape(rewards.shape)


def zero_spread_fraction(rewards, group_size: int) -> jax.Array:
    """Fraction of groups whose rewards are all equal (they carry no GRPO signal)."""
    groups = rewards.reshape(-1, group_size)
    return jnp.mean(jnp.nanmax(groups, axis=1) == jnp.nanmin(groups, axis=1))


def rloo_advantages(rewards, group_size: int):
    """REINFORCE leave-one-out advantages over groups of `group_size` consecutive rows.

        A_i = r_i - mean_{j != i} r_j = n / (n - 1) * (r_i - mean_j r_j)

    rewards [n_groups * group_size] -> same shape. As in `group_advantages`, NaN rewards (a
    failed or inapplicable reward) are left out: n counts a group's finite rewards, and the
    NaN rows get advantage 0. A group with fewer than two rewards has no baseline: all 0.
    """
    if group_size < 2:
        raise ValueError(f"rloo needs group_size >= 2 (a leave-one-out baseline), got {group_size}")
    if rewards.shape[0] % group_size:
        raise ValueError(f"{rewards.shape[0]} rewards do not split into groups of {group_size}")
    groups = rewards.astype(jnp.float32).reshape(-1, group_size)
    valid = ~jnp.isnan(groups)
    n = jnp.sum(valid, axis=1, keepdims=True).astype(jnp.float32)
    total = jnp.sum(jnp.where(valid, groups, 0.0), axis=1, keepdims=True)
    baseline = (total - groups) / jnp.maximum(n - 1.0, 1.0)
    adv = jnp.where(valid & (n >= 2), groups - baseline, 0.0)
    return adv.reshape(rewards.shape)


def whiten(x, mask, shift_mean: bool = True, eps: float = 1e-8, unbiased: bool = False):
    """Normalise x to zero mean and unit variance over its masked entries.

        mu = sum(m x) / sum(m),  var = sum(m (x - mu)^2) / sum(m)   (x sum(m)/(sum(m)-1) if unbiased,
                                                                      as TRL's masked_whiten)
        out = (x - mu) / sqrt(var + eps)        (+ mu again when shift_mean=False)

    Masked-out entries of the output are 0.
    """
    mask = mask.astype(jnp.float32)
    x = _masked(x.astype(jnp.float32), mask)
    n = jnp.maximum(jnp.sum(mask), 1.0)
    mean = jnp.sum(x * mask) / n
    var = jnp.sum(jnp.square(x - mean) * mask) / n
    if unbiased:
        var = var * n / jnp.maximum(n - 1.0, 1.0)
    out = (x - mean) * jax.lax.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return _masked(out, mask)


def gae(rewards, values, mask, gamma: float, lam: float):
    """Generalised advantage estimation over completion tokens; returns (advantages, returns).

    rewards, values, mask: [batch, T], position t = the t-th completion token, mask 1 on a
    prefix of each row (the valid tokens). The value after a row's last valid token is 0
    (the episode ended):
        delta_t = r_t + gamma V_{t+1} - V_t
        A_t     = delta_t + gamma lam A_{t+1}          (V and A are 0 past the last valid token)
        R_t     = A_t + V_t                            (the value targets)
    Both outputs are 0 on masked-out positions. A 0 inside a row acts as an episode end.
    """
    mask = mask.astype(jnp.float32)
    r = _masked(rewards.astype(jnp.float32), mask)
    v = _masked(values.astype(jnp.float32), mask)

    def step(carry, xs):
        next_value, next_adv = carry
        r_t, v_t, m_t = xs
        adv = (r_t + gamma * next_value - v_t + gamma * lam * next_adv) * m_t
        return (v_t * m_t, adv), adv

    init = (jnp.zeros(r.shape[0], jnp.float32), jnp.zeros(r.shape[0], jnp.float32))
    _, adv = jax.lax.scan(step, init, (r.T, v.T, mask.T), reverse=True)
    adv = adv.T
    return adv, (adv + v) * mask


def clipped_value_loss(values, old_values, returns, mask, clip: float = 0.2, loss_agg: str = "bnpo",
                       max_tokens: int | None = None, num_items=None):
    """PPO's clipped value loss, aggregated over tokens (see `aggregate`); returns (loss, metrics).

        v_clip = old_v + clip(v - old_v, -c, c)
        loss_t = 0.5 max((v - R)^2, (v_clip - R)^2)

    metrics: value/clip_frac (tokens where the clipped term is the larger one, as TRL),
    value/mean, value/error (token mean of (v - R)^2).
    """
    mask = mask.astype(jnp.float32)
    values, old_values = values.astype(jnp.float32), old_values.astype(jnp.float32)
    returns = returns.astype(jnp.float32)
    v_clip = old_values + jnp.clip(values - old_values, -clip, clip)
    unclipped, clipped = jnp.square(values - returns), jnp.square(v_clip - returns)
    loss = aggregate(0.5 * jnp.maximum(unclipped, clipped), mask, loss_agg, max_tokens, num_items)
    sg = jax.lax.stop_gradient
    metrics = {"value/clip_frac": _token_mean(sg(clipped) > sg(unclipped), mask),
               "value/mean": _token_mean(sg(values), mask),
               "value/error": _token_mean(sg(unclipped), mask)}
    return loss, metrics


class AdaptiveKLController:
    """The KL coefficient of Ziegler et al. 2019, steering the measured KL towards `target`.

        e     = clip(current_kl / target - 1, -0.2, 0.2)
        value = value * (1 + e * n_steps / horizon)

    Plain Python (it runs between steps, on a host float). `state_dict()` goes into the
    checkpoint so a resumed run keeps the coefficient it had reached.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        if target <= 0 or horizon <= 0:
            raise ValueError(f"AdaptiveKLController needs target > 0 and horizon > 0, got {target}, {horizon}")
        self.value, self.target, self.horizon = float(init_kl_coef), float(target), float(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class FixedKLController:
    """A constant KL coefficient, with the AdaptiveKLController interface."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])
