"""GRPO/RLOO and PPO loss functions over rollout batches, in the training core's `LossFn` form.

The step divides loss_sum by weight_sum after summing both over gradient-accumulation
micro-batches. The aggregations of codejax.losses.aggregate map onto that as:

    grpo, bnpo, dr_grpo   (B x the micro-batch's aggregate, B)   B = rows; exact for grpo / dr_grpo,
                                                                bnpo normalises per micro-batch (as TRL)
    dapo                  (sum of token losses, mask tokens)     every token of the optimizer
                                                                step weighs the same (DAPO)

Rollout batches are laid out as in codejax.rl.rollout: per-token arrays are [N, T] over
completion tokens; `P` is the prompt width.
"""
from __future__ import annotations

import jax.numpy as jnp

from codejax.losses import aggregate, clipped_policy_loss, clipped_value_loss, kl_estimate
from codejax.rl.rollout import completion_view, model_variables, token_logprobs


def _as_sums(loss, metrics: dict, mask, loss_agg: str):
    """A micro-batch's aggregated loss and metric means -> (loss_sum, weight_sum, metric_sums)."""
    weight = jnp.sum(mask) if loss_agg == "dapo" else jnp.asarray(mask.shape[0], jnp.float32)
    return loss * weight, weight, {k: v * weight for k, v in metrics.items()}


def _agg_args(rc, max_tokens: int) -> dict:
    # dapo's global normalisation comes from the (sum, tokens) pair above; per call it is bnpo.
    return dict(loss_agg="bnpo" if rc.loss_agg == "dapo" else rc.loss_agg, max_tokens=max_tokens)


def grpo_loss_fn(model, rc, prompt_len: int, max_tokens: int):
    """Clipped surrogate with sequence advantages (GRPO or RLOO) plus beta x KL to the reference."""
    agg = _agg_args(rc, max_tokens)

    def loss_fn(variables, batch, rng):
        rngs = {} if rng is None else {"dropout": rng}
        logits = model.apply(model_variables(variables), batch["inputs"], batch["positions"], batch["segment_ids"],
                             rngs=rngs)
        logp = completion_view(token_logprobs(logits, batch["targets"]), prompt_len)
        mask = batch["mask"]
        loss, metrics = clipped_policy_loss(logp, batch["old_logp"], batch["advantages"], mask, rc.clip_eps,
                                            rc.clip_eps_high or None, **agg)
        if rc.kl_coef:
            kl = aggregate(kl_estimate(logp, batch["ref_logp"], rc.kl_estimator), mask, **agg)
            metrics["kl"] = kl
            loss = loss + rc.kl_coef * kl
        return _as_sums(loss, metrics, mask, rc.loss_agg)

    return loss_fn


def policy_and_values(model, variables: dict, batch: dict, prompt_len: int, rngs=None):
    """(log-probs, values), both [N, T]: one pass with a shared head, two with a separate value model."""
    head = variables["score_head"]["kernel"].astype(jnp.float32)
    args = (batch["inputs"], batch["positions"], batch["segment_ids"])
    if "value_params" in variables:
        logits = model.apply(model_variables(variables), *args, rngs=rngs or {})
        hidden = model.apply({"params": variables["value_params"]}, *args, return_hidden=True, rngs=rngs or {})
    else:
        logits, hidden = model.apply(model_variables(variables), *args, return_hidden="both", rngs=rngs or {})
    values = (hidden.astype(jnp.float32) @ head)[..., 0]
    logp = token_logprobs(logits, batch["targets"])
    return completion_view(logp, prompt_len), completion_view(values, prompt_len)


def ppo_loss_fn(model, rc, prompt_len: int, max_tokens: int):
    """Clipped surrogate on GAE advantages plus vf_coef x the clipped value loss."""
    agg = _agg_args(rc, max_tokens)

    def loss_fn(variables, batch, rng):
        rngs = {} if rng is None else {"dropout": rng}
        logp, values = policy_and_values(model, variables, batch, prompt_len, rngs)
        mask = batch["mask"]
        pg, metrics = clipped_policy_loss(logp, batch["old_logp"], batch["advantages"], mask, rc.clip_eps,
                                          rc.clip_eps_high or None, **agg)
        vf, value_metrics = clipped_value_loss(values, batch["old_values"], batch["returns"], mask, rc.value_clip, **agg)
        metrics.update(value_metrics, **{"loss/policy": pg, "loss/value": vf})
        return _as_sums(pg + rc.vf_coef * vf, metrics, mask, rc.loss_agg)

    return loss_fn
