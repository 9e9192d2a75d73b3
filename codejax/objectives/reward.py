"""A scalar reward (or value) head on the decoder: score = w . h_last, read at the last real token.

The head is one [hidden, 1] kernel without bias (the layout of HF's
`*ForSequenceClassification.score` with one label); Bradley-Terry only sees reward
differences, and config.preference.center_coef pins the offset instead. It lives in its own
variables collection, `HEAD` ("score_head"), next to the model's `params` (or a PEFT
adapter), so the model code and its HF/PEFT interop are untouched; `policy_view` strips it
before `apply`. The last real token is found from `segment_ids`, never from `id != pad`
(pad and EOS share an id).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from codejax.data.pairs import both_sides
from codejax.losses import bradley_terry_loss
from codejax.objectives.variables import HEAD, policy_view


def init_score_head(hidden_size: int, rng: jax.Array, dtype=jnp.float32) -> dict:
    # std 1/sqrt(hidden): initial scores are O(1) for unit-RMS (final-norm) hidden states.
    return {"kernel": (jax.random.normal(rng, (hidden_size, 1)) / jnp.sqrt(hidden_size)).astype(dtype)}


def zero_score_head(hidden_size: int) -> dict:
    """A head that scores 0 everywhere (PPO's value head: no gradient into a shared trunk until it learns)."""
    return {"kernel": jnp.zeros((hidden_size, 1), jnp.float32)}


def score_head_axes() -> dict:
    return {"kernel": PartitionSpec("embed", None)}


def head_scores(variables: dict, hidden: jax.Array) -> jax.Array:
    """hidden [..., embed] -> [...] scores, in float32."""
    return (hidden.astype(jnp.float32) @ variables[HEAD]["kernel"].astype(jnp.float32))[..., 0]


def last_token_index(segment_ids: jax.Array) -> jax.Array:
    """[batch] index of each row's last real position (rows hold one right-padded sequence)."""
    return jnp.maximum(jnp.sum(segment_ids > 0, axis=-1) - 1, 0)


def sequence_scores(model, variables: dict, inputs, positions, segment_ids, rngs=None) -> jax.Array:
    """[batch] scalar scores of whole sequences (a row's last real token sees all of it)."""
    hidden = model.apply(policy_view(variables), inputs, positions, segment_ids, return_hidden=True,
                         rngs=rngs or {})
    h = jnp.take_along_axis(hidden, last_token_index(segment_ids)[:, None, None], axis=1)[:, 0]
    return head_scores(variables, h)


def reward_loss_fn(model, center_coef: float = 0.0):
    """Bradley-Terry loss over pair batches (built with shift=False), with accuracy and reward metrics."""

    def loss_fn(variables, batch, rng):
        lm = both_sides(batch)
        rngs = {} if rng is None else {"dropout": rng}
        scores = sequence_scores(model, variables, lm["inputs"], lm["positions"], lm["segment_ids"], rngs)
        n = batch["margin"].shape[0]
        r_c, r_r = scores[:n], scores[n:]
        valid = (jnp.sum(batch["chosen_segment_ids"], -1) > 0).astype(jnp.float32)  # padding pairs: 0
        losses = bradley_terry_loss(r_c, r_r, batch["margin"], center_coef)
        sums = {"accuracy": jnp.sum(valid * (r_c > r_r)), "rewards/chosen": jnp.sum(valid * r_c),
                "rewards/rejected": jnp.sum(valid * r_r), "rewards/margin": jnp.sum(valid * (r_c - r_r))}
        return jnp.sum(valid * losses), jnp.sum(valid), sums

    return loss_fn
