"""token_cross_entropy against a plain numpy implementation."""
import numpy as np

from codejax.losses import token_cross_entropy


def _numpy_reference(logits, targets, weights):
    total, count = 0.0, 0.0
    for b in range(logits.shape[0]):
        for t in range(logits.shape[1]):
            row = logits[b, t].astype(np.float64)
            log_z = np.log(np.sum(np.exp(row - row.max()))) + row.max()
            total += weights[b, t] * (log_z - row[targets[b, t]])
            count += weights[b, t]
    return total, count


def test_matches_numpy_on_random_inputs():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 7, 11)).astype(np.float32) * 4
    targets = rng.integers(0, 11, size=(3, 7))
    weights = (rng.random((3, 7)) > 0.3).astype(np.float32)
    loss_sum, weight_sum = token_cross_entropy(logits, targets, weights)
    ref_sum, ref_count = _numpy_reference(logits, targets, weights)
    np.testing.assert_allclose(float(loss_sum), ref_sum, rtol=1e-5)
    assert float(weight_sum) == ref_count


def test_bf16_logits_are_upcast():
    import jax.numpy as jnp
    logits = jnp.asarray(np.full((1, 2, 50000), 0.0), jnp.bfloat16)
    loss_sum, count = token_cross_entropy(logits, np.zeros((1, 2), np.int32), np.ones((1, 2)))
    np.testing.assert_allclose(float(loss_sum) / float(count), np.log(50000), rtol=1e-6)
