"""Optimizer, schedule and the train step, gradient accumulation in particular."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from codejax.models import Transformer, init_params, tiny_config
from codejax.objectives.lm import lm_loss_fn
from codejax.train.optim import decay_mask, learning_rate_schedule, make_optimizer
from codejax.train.step import accumulated_grads, init_train_state, make_eval_step, make_train_step


def _optim_cfg(**kw):
    base = dict(lr=1e-2, schedule="cosine", warmup_steps=2, min_lr_ratio=0.1, weight_decay=0.1,
                b1=0.9, b2=0.95, eps=1e-8, clip_norm=1.0, grad_accum_steps=1)
    return ml_collections.ConfigDict({**base, **kw})


def _batch(rng, rows=8, length=16, vocab=512):
    tokens = rng.integers(0, vocab, size=(rows, length + 1))
    weights = np.ones((rows, length), np.float32)
    # Very different token counts per row: a mean of per-micro-batch means would be wrong.
    for r in range(rows):
        weights[r, : rng.integers(0, length - 1)] = 0
    return {"inputs": tokens[:, :-1].astype(np.int32), "targets": tokens[:, 1:].astype(np.int32),
            "weights": weights, "segment_ids": np.ones((rows, length), np.int32),
            "positions": np.tile(np.arange(length, dtype=np.int32), (rows, 1))}


def test_schedule_warmup_then_cosine_to_floor():
    sched = learning_rate_schedule(1.0, total_steps=12, warmup_steps=2, schedule="cosine", min_lr_ratio=0.1)
    assert float(sched(0)) == 0.0 and float(sched(1)) == pytest.approx(0.5)
    assert float(sched(2)) == pytest.approx(1.0)
    assert float(sched(12)) == pytest.approx(0.1)
    lin = learning_rate_schedule(1.0, total_steps=12, warmup_steps=2, schedule="linear", min_lr_ratio=0.0)
    assert float(lin(7)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="schedule"):
        learning_rate_schedule(1.0, 10, schedule="step")


def test_weight_decay_skips_norms_and_biases():
    cfg = tiny_config("starcoder2")
    mask = decay_mask(init_params(cfg, jax.random.PRNGKey(0)))
    layer = mask["layers"]
    assert layer["self_attn"]["q_proj"]["kernel"] is True
    assert layer["self_attn"]["q_proj"]["bias"] is False
    assert layer["input_layernorm"]["scale"] is False and layer["input_layernorm"]["bias"] is False
    assert mask["embed_tokens"]["embedding"] is True


def test_gradient_accumulation_equals_large_batch():
    cfg = tiny_config("llama")
    model = Transformer(cfg)
    params = init_params(cfg, jax.random.PRNGKey(0))
    optimizer, schedule = make_optimizer(_optim_cfg(), total_steps=10)
    batch = _batch(np.random.default_rng(0))
    results = {}
    for accum in (1, 4):
        step = make_train_step(lm_loss_fn(model), optimizer, schedule, grad_accum_steps=accum)
        state = init_train_state({"params": jax.tree_util.tree_map(jnp.copy, params)}, optimizer, seed=0)
        for _ in range(2):
            state, metrics = step(state, batch)
        results[accum] = (state, metrics)
    (s1, m1), (s4, m4) = results[1], results[4]
    np.testing.assert_allclose(m4["loss"], m1["loss"], rtol=1e-6)
    np.testing.assert_allclose(m4["grad_norm"], m1["grad_norm"], rtol=1e-5)
    assert float(m4["loss_tokens"]) == float(batch["weights"].sum())
    # Adam divides by sqrt(v), so near-zero gradients amplify float32 rounding in the
    # parameters; 1e-4 is still 100x below the lr-sized step a wrong gradient would cause.
    for a, b in zip(jax.tree_util.tree_leaves(s4["params"]), jax.tree_util.tree_leaves(s1["params"])):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)
    assert int(s4["step"]) == 2
    # The gradients themselves agree to float32 precision.
    loss_fn, rng = lm_loss_fn(model), jax.random.PRNGKey(0)
    _, _, g1, _ = accumulated_grads(loss_fn, {"params": params}, batch, rng, 1)
    _, _, g4, _ = accumulated_grads(loss_fn, {"params": params}, batch, rng, 4)
    for a, b in zip(jax.tree_util.tree_leaves(g4), jax.tree_util.tree_leaves(g1)):
        np.testing.assert_allclose(a, b, atol=1e-7, rtol=1e-4)


def test_mean_of_means_would_differ():
    """The accumulation test above can fail: per-micro-batch means give another loss here."""
    cfg = tiny_config("llama")
    model = Transformer(cfg)
    params = init_params(cfg, jax.random.PRNGKey(0))
    batch = _batch(np.random.default_rng(0))
    eval_step = make_eval_step(lm_loss_fn(model))
    loss_sum, count, _ = eval_step({"params": params}, batch)
    means = []
    for i in range(4):
        mb = {k: v[2 * i: 2 * i + 2] for k, v in batch.items()}
        s, c, _ = eval_step({"params": params}, mb)
        means.append(float(s) / float(c))
    assert abs(np.mean(means) - float(loss_sum) / float(count)) > 1e-4


@pytest.mark.slow
def test_training_reduces_loss_on_a_repeated_batch():
    cfg = tiny_config("qwen2")
    model = Transformer(cfg)
    optimizer, schedule = make_optimizer(_optim_cfg(lr=3e-3, warmup_steps=0), total_steps=30)
    step = make_train_step(lm_loss_fn(model), optimizer, schedule)
    state = init_train_state({"params": init_params(cfg, jax.random.PRNGKey(1))}, optimizer, seed=0)
    batch = _batch(np.random.default_rng(1))
    losses = []
    for _ in range(30):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.5 * losses[0]


def test_metric_sums_are_weight_averaged_across_micro_batches():
    """A loss fn's third output (metric sums) comes out as a weight-weighted mean, whatever the accumulation."""
    cfg = tiny_config("llama")
    model = Transformer(cfg)
    params = init_params(cfg, jax.random.PRNGKey(0))
    batch = _batch(np.random.default_rng(1))
    lm = lm_loss_fn(model)

    def loss_fn(variables, b, rng):
        loss_sum, weight_sum = lm(variables, b, rng)
        # Per-row token counts weighted by themselves: a metric whose mean is not the mean of means.
        per_row = b["weights"].sum(-1)
        return loss_sum, weight_sum, {"row_tokens": jnp.sum(per_row * per_row)}

    w = np.asarray(batch["weights"]).sum(-1)
    expected = float(np.sum(w * w) / np.sum(w))
    rng = jax.random.PRNGKey(0)
    for accum in (1, 4):
        _, _, _, metrics = accumulated_grads(loss_fn, {"params": params}, batch, rng, accum)
        np.testing.assert_allclose(float(metrics["row_tokens"]), expected, rtol=1e-6)
    _, _, sums = make_eval_step(loss_fn)({"params": params}, batch)
    np.testing.assert_allclose(float(sums["row_tokens"]), float(np.sum(w * w)), rtol=1e-6)
