"""Policy-gradient loss functions (GRPO/RLOO, PPO) over rollout batches, in the training core's `LossFn` form.

Rollout batches are laid out as in codejax.rl.rollout: each row is the prompt left-padded to
P tokens, then the completion, right-padded to T; per-token arrays ([N, T]: log-probs,
advantages, values, the mask) are over completion tokens, the *completion view* of the row.

The step divides loss_sum by weight_sum after summing both over gradient-accumulation
micro-batches. The aggregations of codejax.losses.aggregate map onto that as:

    grpo, bnpo, dr_grpo   (B x the micro-batch's aggregate, B)   B = rows; exact for grpo / dr_grpo,
                                                                bnpo normalises per micro-batch (as TRL)
    dapo                  (sum of token losses, rows x N/R)      N = mask tokens of the whole rollout
                                                                batch, R its rows: each optimizer step
                                                                divides by N / minibatches, so every
                                                                token of a generation weighs the same
                                                                (DAPO; TRL's num_items_in_batch)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from codejax.losses import aggregate, clipped_policy_loss, clipped_value_loss, kl_estimate, token_logprobs
from codejax.objectives.reward import head_scores
from codejax.objectives.variables import VALUE, policy_view


def completion_view(x: jax.Array, prompt_len: int) -> jax.Array:
    """[N, P + T - 1, ...] row quantities -> [N, T, ...] at the completion's target positions."""
    return x[:, prompt_len - 1:]


def completion_logprobs(model, variables: dict, batch: dict, prompt_len: int, rngs=None) -> jax.Array:
    """[N, T] log-probs of the completion tokens under the model `variables` describe."""
    logits = model.apply(variables, batch["inputs"], batch["positions"], batch["segment_ids"], rngs=rngs or {})
    return completion_view(token_logprobs(logits, batch["targets"]), prompt_len)


TIS_WEIGHT = "tis_weight"  # rl.tis_cap > 0: per-token min(pi_old / pi_sampler, cap), see add_sampler_logprobs
TOKEN_SHARE = "token_share"  # dapo: every rollout row holds the rollout batch's mean mask tokens per row


def add_sampler_logprobs(batch: dict, sampler_logp: np.ndarray, tis_cap: float) -> tuple[dict, dict]:
    """Compare the sampler's log-probs of the rollout tokens with the trainer's (batch["old_logp"]).

    Returns the batch (with TIS_WEIGHT = min(exp(old_logp - sampler_logp), tis_cap) when tis_cap > 0:
    truncated importance sampling, for a sampler that is not exactly the trained policy, e.g. bf16
    against fp32) and the metrics logprob_diff/mean and /max of |sampler - trainer| over the mask."""
    mask = batch["mask"] > 0
    diff = np.abs(sampler_logp - batch["old_logp"])[mask]
    metrics = {"train/logprob_diff/mean": float(diff.mean()) if diff.size else 0.0,
               "train/logprob_diff/max": float(diff.max()) if diff.size else 0.0}
    if tis_cap > 0:
        weight = np.where(mask, np.minimum(np.exp(batch["old_logp"] - sampler_logp), tis_cap), 0.0)
        batch = {**batch, TIS_WEIGHT: weight.astype(np.float32)}
        metrics["train/tis_weight/mean"] = float(weight[mask].mean()) if mask.any() else 0.0
        metrics["train/tis_weight/capped_fraction"] = float(np.mean(weight[mask] >= tis_cap)) if mask.any() else 0.0
    return batch, metrics


def add_token_share(batch: dict) -> dict:
    """`batch` with TOKEN_SHARE: dapo's normaliser, split evenly over the rows, so that any minibatch
    of m rows divides its token-loss sum by m x N / R (N mask tokens in R rows)."""
    mask = batch["mask"]
    share = float(mask.sum()) / max(mask.shape[0], 1)
    return {**batch, TOKEN_SHARE: np.full(mask.shape[0], share, np.float32)}


def _as_sums(loss, metrics: dict, batch: dict, loss_agg: str):
    """A micro-batch's aggregated loss and metric means -> (loss_sum, weight_sum, metric_sums).

    dapo: `loss` is the micro-batch's token mean (bnpo), so loss x its tokens is its token sum."""
    mask = batch["mask"]
    if loss_agg == "dapo":
        if TOKEN_SHARE not in batch:
            raise ValueError("loss_agg='dapo' needs the rollout batch's token share: add_token_share(batch)")
        loss, weight = loss * jnp.sum(mask), jnp.sum(batch[TOKEN_SHARE])
        return loss, weight, {k: v * weight for k, v in metrics.items()}
    weight = jnp.asarray(mask.shape[0], jnp.float32)
    return loss * weight, weight, {k: v * weight for k, v in metrics.items()}


def _agg_args(rc, max_tokens: int) -> dict:
    # dapo's global normalisation comes from the (sum, tokens) pair above; per call it is bnpo.
    return dict(loss_agg="bnpo" if rc.loss_agg == "dapo" else rc.loss_agg, max_tokens=max_tokens)


def grpo_loss_fn(model, rc, prompt_len: int, max_tokens: int):
    """Clipped surrogate with sequence advantages (GRPO or RLOO) plus beta x KL to the reference."""
    agg = _agg_args(rc, max_tokens)

    def loss_fn(variables, batch, rng):
        rngs = {} if rng is None else {"dropout": rng}
        logp = completion_logprobs(model, policy_view(variables), batch, prompt_len, rngs)
        mask = batch["mask"]
        loss, metrics = clipped_policy_loss(logp, batch["old_logp"], batch["advantages"], mask, rc.clip_eps,
                                            rc.clip_eps_high or None, token_weights=batch.get(TIS_WEIGHT), **agg)
        if rc.kl_coef:
            kl = aggregate(kl_estimate(logp, batch["ref_logp"], rc.kl_estimator), mask, **agg)
            metrics["kl"] = kl
            loss = loss + rc.kl_coef * kl
        return _as_sums(loss, metrics, batch, rc.loss_agg)

    return loss_fn


def policy_and_values(model, variables: dict, batch: dict, prompt_len: int, rngs=None):
    """(log-probs, values), both [N, T]: one pass with a shared head, two with a separate value model."""
    args = (batch["inputs"], batch["positions"], batch["segment_ids"])
    if VALUE in variables:
        logits = model.apply(policy_view(variables), *args, rngs=rngs or {})
        hidden = model.apply({"params": variables[VALUE]}, *args, return_hidden=True, rngs=rngs or {})
    else:
        logits, hidden = model.apply(policy_view(variables), *args, return_hidden="both", rngs=rngs or {})
    logp = token_logprobs(logits, batch["targets"])
    return completion_view(logp, prompt_len), completion_view(head_scores(variables, hidden), prompt_len)


def ppo_loss_fn(model, rc, prompt_len: int, max_tokens: int):
    """Clipped surrogate on GAE advantages plus vf_coef x the clipped value loss."""
    agg = _agg_args(rc, max_tokens)

    def loss_fn(variables, batch, rng):
        rngs = {} if rng is None else {"dropout": rng}
        logp, values = policy_and_values(model, variables, batch, prompt_len, rngs)
        mask = batch["mask"]
        pg, metrics = clipped_policy_loss(logp, batch["old_logp"], batch["advantages"], mask, rc.clip_eps,
                                          rc.clip_eps_high or None, token_weights=batch.get(TIS_WEIGHT), **agg)
        vf, value_metrics = clipped_value_loss(values, batch["old_values"], batch["returns"], mask, rc.value_clip, **agg)
        metrics.update(value_metrics, **{"loss/policy": pg, "loss/value": vf})
        return _as_sums(pg + rc.vf_coef * vf, metrics, batch, rc.loss_agg)

    return loss_fn
