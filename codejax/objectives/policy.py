"""Policy-gradient loss functions (GRPO/RLOO, PPO) over rollout batches, in the training core's `LossFn` form.

Rollout batches are laid out as in codejax.rl.rollout: each row is the prompt left-padded to
P tokens, then the completion, right-padded to T; per-token arrays ([N, T]: log-probs,
advantages, values, the mask) are over completion tokens, the *completion view* of the row.

The step divides loss_sum by weight_sum after summing both over gradient-accumulation
micro-batches. The aggregations of codejax.losses.aggregate map onto that as:

    grpo, bnpo, dr_grpo   (B x the micro-batch's aggregate, B)   B = rows; exact for grpo / dr_grpo,
                                                                bnpo normalises per micro-batch (as TRL)
    dapo                  (sum of token losses, mask tokens)     every token of the optimizer
                                                                step weighs the same (DAPO)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

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
        logp = completion_logprobs(model, policy_view(variables), batch, prompt_len, rngs)
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
                                          rc.clip_eps_high or None, **agg)
        vf, value_metrics = clipped_value_loss(values, batch["old_values"], batch["returns"], mask, rc.value_clip, **agg)
        metrics.update(value_metrics, **{"loss/policy": pg, "loss/value": vf})
        return _as_sums(pg + rc.vf_coef * vf, metrics, mask, rc.loss_agg)

    return loss_fn
