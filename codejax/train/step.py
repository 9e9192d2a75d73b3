"""Train and eval steps: pure functions `(state, batch, frozen) -> (state, metrics)`, jitted with donation.

A loss function has the signature `loss_fn(variables, batch, rng) -> (loss_sum, weight_sum)`:
a weighted sum over tokens (or examples) and the sum of weights. It may return a third
item, a dict of metric *sums* over the same weights (DPO's reward accuracy, say), which
the step reports divided by the total weight, like the loss. Every job (LM, DPO,
reward, ...) supplies one (codejax/objectives); the step, accumulation and optimizer are shared.

`variables` is a Flax variables dict. The trainable collections live in
state["params"] (full fine-tuning: {"params": weights}; LoRA: {"lora": ...});
the frozen ones ({} or, with PEFT, {"params": base}) are a separate argument:
no gradients, no optimizer state, not checkpointed. `rng` is None when the
loss must be deterministic (evaluation): no dropout.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from codejax.objectives.variables import combine

TrainState = dict[str, Any]  # {"step", "params", "opt_state", "rng"}
LossFn = Callable[[Any, dict, jax.Array | None], tuple]  # (loss_sum, weight_sum[, metric_sums])


def with_metric_sums(out: tuple) -> tuple[jax.Array, jax.Array, dict]:
    """A loss function's output as (loss_sum, weight_sum, metric_sums), {} when it has none."""
    return (out[0], out[1], out[2]) if len(out) == 3 else (out[0], out[1], {})


def init_train_state(params, optimizer: optax.GradientTransformation, seed: int) -> TrainState:
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": optimizer.init(params),
            "rng": jax.random.PRNGKey(seed)}


def _split_micro_batches(batch: dict, num: int) -> dict:
    def split(x):
        if x.shape[0] % num:
            raise ValueError(f"batch of {x.shape[0]} rows does not split into {num} micro-batches "
                             "(data.batch_size must be a multiple of optim.grad_accum_steps)")
        # Strided: micro-batch i takes rows i, i+num, ... so each device keeps its own rows
        # (a contiguous block would live on a few devices and force an all-to-all each step).
        x = x.reshape((x.shape[0] // num, num) + x.shape[1:]).swapaxes(0, 1)
        return nn.with_logical_constraint(x, (None, "activation_batch") + (None,) * (x.ndim - 2))
    return jax.tree_util.tree_map(split, batch)


def accumulated_grads(loss_fn: LossFn, params, batch: dict, rng: jax.Array, grad_accum_steps: int,
                      frozen: dict | None = None):
    """Gradient of sum(loss)/sum(weights) over the whole batch, in `grad_accum_steps` pieces.

    Each micro-batch contributes the gradient of its loss *sum*; dividing the
    total by the total weight afterwards gives exactly the large-batch
    gradient of the per-token mean, whatever the token counts per piece.
    Gradients are taken with respect to `params` only, never `frozen`. Returns
    (mean loss, weight_sum, grads, mean metrics).
    """
    def split_loss(p, b, r):
        loss_sum, weight_sum, sums = with_metric_sums(loss_fn(combine(p, frozen), b, r))
        return loss_sum, (weight_sum, sums)

    grad_fn = jax.value_and_grad(split_loss, has_aux=True)
    if grad_accum_steps == 1:
        (loss_sum, (weight_sum, sums)), grads = grad_fn(params, batch, rng)
    else:
        micro = _split_micro_batches(batch, grad_accum_steps)
        rngs = jax.random.split(rng, grad_accum_steps)

        def body(carry, xs):
            mb, r = xs
            out, g = grad_fn(params, mb, r)
            return jax.tree_util.tree_map(jnp.add, carry, (g, out)), None

        zeros = jax.tree_util.tree_map(jnp.zeros_like, (params, jax.eval_shape(
            lambda: grad_fn(params, jax.tree_util.tree_map(lambda x: x[0], micro), rngs[0])[0])))
        (grads, (loss_sum, (weight_sum, sums))), _ = jax.lax.scan(body, zeros, (micro, rngs))
    denom = jnp.maximum(weight_sum, 1.0)
    grads = jax.tree_util.tree_map(lambda g: g / denom.astype(g.dtype), grads)
    return loss_sum / denom, weight_sum, grads, {k: v / denom for k, v in sums.items()}


def _jit(fn, parallel, in_shardings, out_shardings, donate: bool):
    """jit with shardings; calls run inside the mesh/rules context that activation constraints need."""
    jitted = jax.jit(fn, in_shardings=in_shardings, out_shardings=out_shardings,
                     donate_argnums=0 if donate else ())
    if parallel is None:
        return jitted

    def call(*args):
        with parallel.context():
            return jitted(*args)
    return call


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, schedule: optax.Schedule,
                    grad_accum_steps: int = 1, jit: bool = True, parallel=None, state_shardings=None,
                    frozen_shardings=None):
    """Build `train_step(state, batch, frozen) -> (state, metrics)`; the state buffers are donated.

    `frozen` holds the variables that are not trained ({} for full fine-tuning).
    With `parallel` and `state_shardings` the step is compiled for the mesh:
    state in and out in its shardings, the batch split over data x fsdp,
    frozen variables in `frozen_shardings`, metrics replicated.
    """

    def train_step(state: TrainState, batch: dict, frozen: dict):
        rng, step_rng = jax.random.split(state["rng"])
        loss, weight_sum, grads, extra = accumulated_grads(loss_fn, state["params"], batch, step_rng,
                                                           grad_accum_steps, frozen)
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
                   "lr": schedule(state["step"]), "loss_tokens": weight_sum, **extra}
        new_state = {"step": state["step"] + 1, "params": params, "opt_state": opt_state, "rng": rng}
        return new_state, metrics

    if not jit:
        return _frozen_optional(train_step)
    if parallel is None:
        return _frozen_optional(_jit(train_step, None, None, None, donate=True))
    return _frozen_optional(_jit(train_step, parallel, (state_shardings, parallel.batch_sharding, frozen_shardings),
                                 (state_shardings, parallel.replicated), donate=True))


def _frozen_optional(step):
    """Let callers without frozen variables (full fine-tuning) omit the argument."""
    def call(first, batch, frozen=None):
        return step(first, batch, {} if frozen is None else frozen)
    return call


def make_eval_step(loss_fn: LossFn, jit: bool = True, parallel=None, param_shardings=None,
                   frozen_shardings=None):
    """Build `eval_step(params, batch, frozen) -> (loss_sum, weight_sum, metric_sums)` (deterministic: rng None)."""

    def eval_step(params, batch, frozen):
        return with_metric_sums(loss_fn(combine(params, frozen), batch, None))

    if not jit:
        return _frozen_optional(eval_step)
    if parallel is None:
        return _frozen_optional(_jit(eval_step, None, None, None, donate=False))
    return _frozen_optional(_jit(eval_step, parallel, (param_shardings, parallel.batch_sharding, frozen_shardings),
                                 parallel.replicated, donate=False))
