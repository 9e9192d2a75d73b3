"""Preference and RL losses as pure functions of per-sequence log-probabilities and rewards.

Notation: for each preference pair, pi_c / pi_r are the policy's summed
log-probs of the chosen / rejected completion (completion tokens only), ref_c /
ref_r the reference model's, and

    h = (pi_c - ref_c) - (pi_r - ref_r)      the implicit reward margin (DPO)

Each function returns per-example losses [batch] (the caller sums and divides,
like token_cross_entropy) so gradient accumulation stays exact. The jobs that
use them (reward, dpo, ppo, grpo) are not built yet; these are the formulas.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

DPO_LOSSES = ("sigmoid", "ipo", "hinge", "robust", "simpo", "orpo")


def sequence_logprobs(logits: jax.Array, targets: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Summed log-probs of `targets` under `logits` over weighted (completion) tokens, and token counts.

    logits [batch, seq, vocab], targets int [batch, seq], weights [batch, seq]
    (1 on completion tokens, 0 on prompt and padding) -> ([batch], [batch]).
    """
    logits = logits.astype(jnp.float32)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), targets[..., None].astype(jnp.int32), -1)[..., 0]
    weights = weights.astype(jnp.float32)
    return jnp.sum(logp * weights, axis=-1), jnp.sum(weights, axis=-1)


def dpo_loss(pi_c, pi_r, ref_c=None, ref_r=None, *, beta: float = 0.1, loss_type: str = "sigmoid",
             label_smoothing: float = 0.0, len_c=None, len_r=None, simpo_gamma: float = 0.5):
    """Per-pair losses [batch] of the DPO family.

    sigmoid  -(1-e) log s(b h) - e log s(-b h)     (DPO; e = label_smoothing gives cDPO)
    robust   (-(1-e) log s(b h) + e log s(-b h)) / (1 - 2e)   (unbiased under label noise e)
    ipo      (h - 1/(2b))^2
    hinge    max(0, 1 - b h)
    simpo    -log s(b (pi_c/len_c - pi_r/len_r) - gamma)      (reference-free, length-normalised)
    orpo     -log s(log odds_c - log odds_r), odds = p/(1-p), p = exp(pi/len)   (reference-free; the
             full ORPO objective is NLL(chosen) + lambda * this, assembled by the caller)
    """
    if loss_type not in DPO_LOSSES:
        raise ValueError(f"loss_type={loss_type!r}; expected one of {DPO_LOSSES}")
    if loss_type in ("simpo", "orpo"):
        if len_c is None or len_r is None:
            raise ValueError(f"loss_type={loss_type!r} needs the completion lengths len_c and len_r")
        avg_c, avg_r = pi_c / jnp.maximum(len_c, 1.0), pi_r / jnp.maximum(len_r, 1.0)
        if loss_type == "simpo":
            return -jax.nn.log_sigmoid(beta * (avg_c - avg_r) - simpo_gamma)
        # log(p / (1 - p)) with log p = avg: avg - log(1 - exp(avg)), stable for avg < 0.
        log_odds = (avg_c - jnp.log1p(-jnp.exp(avg_c))) - (avg_r - jnp.log1p(-jnp.exp(avg_r)))
        return -jax.nn.log_sigmoid(log_odds)
    h = (pi_c - ref_c) - (pi_r - ref_r)
    if loss_type == "sigmoid":
        return -(1 - label_smoothing) * jax.nn.log_sigmoid(beta * h) - label_smoothing * jax.nn.log_sigmoid(-beta * h)
    if loss_type == "robust":
        return (-(1 - label_smoothing) * jax.nn.log_sigmoid(beta * h)
                + label_smoothing * jax.nn.log_sigmoid(-beta * h)) / (1 - 2 * label_smoothing)
    if loss_type == "ipo":
        return jnp.square(h - 1 / (2 * beta))
    return jax.nn.relu(1 - beta * h)  # hinge


def dpo_metrics(pi_c, pi_r, ref_c, ref_r, beta: float) -> dict[str, jax.Array]:
    """Implicit rewards b(pi - ref), their margin and the preference accuracy (means over the batch)."""
    chosen, rejected = beta * (pi_c - ref_c), beta * (pi_r - ref_r)
    return {"rewards/chosen": jnp.mean(chosen), "rewards/rejected": jnp.mean(rejected),
            "rewards/margin": jnp.mean(chosen - rejected), "rewards/accuracy": jnp.mean(chosen > rejected)}


def bradley_terry_loss(r_c, r_r, margin=0.0, centering: float = 0.0):
    """Reward-model loss per pair: -log s(r_c - r_r - margin) + centering * (r_c + r_r)^2.

    The centring term keeps rewards near zero mean (the reward-centring trick),
    since the Bradley-Terry likelihood sees only differences.
    """
    return -jax.nn.log_sigmoid(r_c - r_r - margin) + centering * jnp.square(r_c + r_r)


def group_advantages(rewards, group_size: int, eps: float = 1e-4, scale: bool = True):
    """GRPO advantages: (r - mean of its group) / (std of its group + eps), groups of consecutive rows.

    rewards [n_groups * group_size] -> same shape. NaN rewards (a failed reward
    call) are ignored by the group statistics (nanmean / nanstd) and get
    advantage 0. With scale=False (Dr. GRPO) the std division is skipped.
    """
    groups = rewards.reshape(-1, group_size)
    mean = jnp.nanmean(groups, axis=1, keepdims=True)
    centred = groups - mean
    if scale:
        centred = centred / (jnp.nanstd(groups, axis=1, keepdims=True) + eps)
    return jnp.nan_to_num(centred, nan=0.0).reshape(rewards.shape)


def zero_spread_fraction(rewards, group_size: int) -> jax.Array:
    """Fraction of groups whose rewards are all equal (they carry no GRPO signal)."""
    groups = rewards.reshape(-1, group_size)
    return jnp.mean(jnp.nanmax(groups, axis=1) == jnp.nanmin(groups, axis=1))
