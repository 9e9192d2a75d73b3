"""Next-token cross-entropy and token log-probabilities."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def token_cross_entropy(logits: jax.Array, targets: jax.Array, weights: jax.Array
                        ) -> tuple[jax.Array, jax.Array]:
    """Weighted sum of token negative log-likelihoods, and the sum of weights.

        loss_sum   = sum_{b,t} w[b,t] * -log softmax(logits[b,t])[targets[b,t]]
        weight_sum = sum_{b,t} w[b,t]

    logits: float [batch, seq, vocab]; targets: int [batch, seq]; weights:
    float [batch, seq] (0 on prompt tokens and padding). Computed in float32.
    Returning sums rather than a mean lets gradient accumulation divide by
    the token count of the whole batch: a mean of per-micro-batch means would
    weight short micro-batches too heavily.
    """
    logits = logits.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    weights = weights.astype(jnp.float32)
    return jnp.sum((log_z - target_logit) * weights), jnp.sum(weights)


def token_logprobs(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """log softmax(logits)[targets] at every position, in float32: [batch, seq, vocab] -> [batch, seq]."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
