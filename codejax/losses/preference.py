"""Preference losses as pure functions of per-sequence log-probabilities and rewards.

Notation: for each preference pair, pi_c / pi_r are the policy's summed
log-probs of the chosen / rejected completion (completion tokens only), ref_c /
ref_r the reference model's, and

    h = (pi_c - ref_c) - (pi_r - ref_r)      the implicit reward margin (DPO)

Each function returns per-example losses [batch] (the caller sums and divides,
like token_cross_entropy) so gradient accumulation stays exact. The DPO family is
a table (`DPO_LOSS_TYPES`), one row per `preference.loss_type`; the jobs that use
these are `reward` and `dpo` (codejax/objectives/reward.py and dpo.py).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp


def sequence_logprobs(logits: jax.Array, targets: jax.Array, weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Summed log-probs of `targets` under `logits` over weighted (completion) tokens, and token counts.

    logits [batch, seq, vocab], targets int [batch, seq], weights [batch, seq]
    (1 on completion tokens, 0 on prompt and padding) -> ([batch], [batch]).
    """
    logits = logits.astype(jnp.float32)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), targets[..., None].astype(jnp.int32), -1)[..., 0]
    weights = weights.astype(jnp.float32)
    return jnp.sum(logp * weights, axis=-1), jnp.sum(weights, axis=-1)


# Reference-based losses: f(h, beta, e) with e = label_smoothing.
def _sigmoid(h, beta, e):
    return -(1 - e) * jax.nn.log_sigmoid(beta * h) - e * jax.nn.log_sigmoid(-beta * h)


def _robust(h, beta, e):
    return (-(1 - e) * jax.nn.log_sigmoid(beta * h) + e * jax.nn.log_sigmoid(-beta * h)) / (1 - 2 * e)


def _ipo(h, beta, e):
    return jnp.square(h - 1 / (2 * beta))


def _hinge(h, beta, e):
    return jax.nn.relu(1 - beta * h)


# Reference-free losses: f(avg_c, avg_r, beta, gamma, e) of the length-normalised log-probs pi / len.
def _simpo(avg_c, avg_r, beta, gamma, e):
    h = beta * (avg_c - avg_r) - gamma
    return -(1 - e) * jax.nn.log_sigmoid(h) - e * jax.nn.log_sigmoid(-h)  # label smoothing as TRL's SimPO


_LOG2 = math.log(2.0)


def log1mexp(x):
    """log(1 - exp(x)) for x <= 0, accurate at both ends (Maechler 2012): log(-expm1(x)) above -log 2,
    log1p(-exp(x)) below. Each branch sees only inputs it is finite on, so the unused branch of the
    `where` cannot put a NaN into the gradient; x = 0 (p = 1) is clipped to the smallest negative float."""
    x = jnp.minimum(x, -jnp.finfo(jnp.result_type(x, jnp.float32)).tiny)
    near_zero = x > -_LOG2
    return jnp.where(near_zero, jnp.log(-jnp.expm1(jnp.maximum(x, -_LOG2))),
                     jnp.log1p(-jnp.exp(jnp.minimum(x, -_LOG2))))


def _orpo(avg_c, avg_r, beta, gamma, e):
    # log(p / (1 - p)) with log p = avg: avg - log(1 - exp(avg)).
    log_odds = (avg_c - log1mexp(avg_c)) - (avg_r - log1mexp(avg_r))
    return -jax.nn.log_sigmoid(log_odds)


@dataclasses.dataclass(frozen=True)
class DPOLossType:
    loss: Callable  # f(h, beta, label_smoothing), or f(avg_c, avg_r, beta, simpo_gamma, label_smoothing) when reference_free
    reference_free: bool = False  # compares length-normalised policy log-probs; no reference model
    chosen_nll: bool = False  # the objective adds NLL(chosen) (ORPO: NLL + orpo_alpha * loss)
    max_label_smoothing: float = 1.0  # label_smoothing must lie in [0, this)
    smoothing: bool = True  # the loss reads label_smoothing; where False a non-zero one is an error, not ignored


DPO_LOSS_TYPES: dict[str, DPOLossType] = {
    "sigmoid": DPOLossType(_sigmoid),  # DPO; label_smoothing gives cDPO
    "ipo": DPOLossType(_ipo, smoothing=False),
    "hinge": DPOLossType(_hinge, smoothing=False),
    "robust": DPOLossType(_robust, max_label_smoothing=0.5),  # divides by 1 - 2e
    "simpo": DPOLossType(_simpo, reference_free=True),
    "orpo": DPOLossType(_orpo, reference_free=True, chosen_nll=True, smoothing=False),
}
DPO_LOSSES = tuple(DPO_LOSS_TYPES)


def get_dpo_loss(loss_type: str) -> DPOLossType:
    try:
        return DPO_LOSS_TYPES[loss_type]
    except KeyError:
        raise ValueError(f"loss_type={loss_type!r}; expected one of {DPO_LOSSES}") from None


def dpo_loss(pi_c, pi_r, ref_c=None, ref_r=None, *, beta: float = 0.1, loss_type: str = "sigmoid",
             label_smoothing: float = 0.0, len_c=None, len_r=None, simpo_gamma: float = 0.5,
             length_norm: bool = False):
    """Per-pair losses [batch] of the DPO family; h = (pi_c - ref_c) - (pi_r - ref_r).

    sigmoid  -(1-e) log s(b h) - e log s(-b h)     (DPO; e = label_smoothing gives cDPO)
    robust   (-(1-e) log s(b h) + e log s(-b h)) / (1 - 2e)   (unbiased under label noise e)
    ipo      (h - 1/(2b))^2
    hinge    max(0, 1 - b h)
    simpo    -(1-e) log s(z) - e log s(-z), z = b (pi_c/len_c - pi_r/len_r) - gamma
             (reference-free, length-normalised; label smoothing as TRL's)
    orpo     -log s(log odds_c - log odds_r), odds = p/(1-p), p = exp(pi/len)   (reference-free; the
             full ORPO objective is NLL(chosen) + lambda * this, assembled by the caller)

    length_norm: h from per-token log-probs (each of pi and ref divided by its completion's
    length), as TRL's and the IPO authors' IPO; needs len_c and len_r.
    """
    row = get_dpo_loss(loss_type)
    if (row.reference_free or length_norm) and (len_c is None or len_r is None):
        raise ValueError(f"loss_type={loss_type!r} (length_norm={length_norm}) needs the completion lengths "
                         "len_c and len_r")
    if row.reference_free:
        avg_c, avg_r = pi_c / jnp.maximum(len_c, 1.0), pi_r / jnp.maximum(len_r, 1.0)
        return row.loss(avg_c, avg_r, beta, simpo_gamma, label_smoothing)
    if length_norm:
        len_c, len_r = jnp.maximum(len_c, 1.0), jnp.maximum(len_r, 1.0)
        pi_c, ref_c, pi_r, ref_r = pi_c / len_c, ref_c / len_c, pi_r / len_r, ref_r / len_r
    return row.loss((pi_c - ref_c) - (pi_r - ref_r), beta, label_smoothing)


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
