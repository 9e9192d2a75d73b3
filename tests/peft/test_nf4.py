"""NF4 storage: the codebook, packing, storage cost and quantisation error against a plain numpy NF4."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

from codejax.models import init_params, tiny_config
from codejax.models import nf4
from codejax.peft import quantize_base
from codejax.peft.api import quantized_axes
from codejax.models import logical_axes


def test_codebook_is_the_normal_quantile_construction():
    # QLoRA's NF4: 8 positive and 7 negative normal quantiles plus an exact zero, scaled to [-1, 1].
    offset = 0.9677083
    positive = norm.ppf(np.linspace(offset, 0.5, 9)[:-1])
    negative = -norm.ppf(np.linspace(offset, 0.5, 8)[:-1])
    levels = np.sort(np.concatenate([negative, [0.0], positive]))
    np.testing.assert_allclose(levels / levels.max(), nf4.NF4_CODEBOOK, atol=1e-6)


def _numpy_nf4(w: np.ndarray) -> np.ndarray:
    """Reference: nearest level per value, float32 absmax per block of 64, no double quantisation."""
    blocks = w.reshape(-1, 64)
    absmax = np.abs(blocks).max(axis=1, keepdims=True)
    idx = np.abs(blocks[..., None] / absmax[..., None] - nf4.NF4_CODEBOOK).argmin(-1)
    return (nf4.NF4_CODEBOOK[idx] * absmax).reshape(w.shape)


def test_error_on_normal_weights_matches_nf4():
    w = np.random.default_rng(0).standard_normal((256, 512)).astype(np.float32)
    q = nf4.quantize(jnp.asarray(w))
    got = np.asarray(nf4.dequantize(q, w.shape))
    reference = _numpy_nf4(w)
    rel_rmse = np.sqrt(np.mean((got - w) ** 2)) / np.std(w)
    ref_rmse = np.sqrt(np.mean((reference - w) ** 2)) / np.std(w)
    # Same levels picked as the plain implementation, up to the 8-bit absmax error ...
    assert np.mean(np.isclose(got, reference, rtol=0.02, atol=1e-6)) > 0.999
    # ... so the error is NF4's: about 9.2% of the weight RMS for block 64 on a normal.
    assert abs(rel_rmse - ref_rmse) < 0.002, (rel_rmse, ref_rmse)
    assert 0.09 < rel_rmse < 0.11, rel_rmse
    # A 16-level uniform grid over the same blocks does worse (about 10.1%): NF4's levels matter.
    blocks = w.reshape(-1, 64)
    absmax = np.abs(blocks).max(axis=1, keepdims=True)
    uniform = (np.round(blocks / absmax * 7.5 + 7.5) - 7.5) / 7.5 * absmax
    assert np.sqrt(np.mean((uniform.reshape(w.shape) - w) ** 2)) / np.std(w) > 1.05 * rel_rmse


def test_storage_is_about_4_1_bits_per_weight():
    w = jnp.zeros((1024, 1024))
    q = nf4.quantize(w)
    assert q["codes"].dtype == jnp.uint8 and q["codes"].size == w.size // 2  # two codes per byte
    assert q["absmax"].dtype == jnp.int8 and q["absmax"].size == w.size // 64
    assert q["absmax_scale"].size == w.size // 64 // 256
    bits = nf4.storage_bits(q) / w.size
    assert 4.1 <= bits <= 4.2, bits


def test_levels_round_trip_and_packing_order():
    codes = np.arange(64) % 16
    w = nf4.NF4_CODEBOOK[codes] * 3.0  # one block whose absmax is 3
    q = nf4.quantize(jnp.asarray(w))
    packed = np.asarray(q["codes"])[0]
    assert packed[0] == (codes[0] << 4 | codes[1]) and packed[5] == (codes[10] << 4 | codes[11])
    np.testing.assert_allclose(nf4.dequantize(q, w.shape), w, rtol=1e-6)


@pytest.mark.parametrize("shape", [(5, 7), (3, 64, 2), (1,)])
def test_odd_sizes_are_padded_and_cut_back(shape):
    w = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    out = np.asarray(nf4.dequantize(nf4.quantize(jnp.asarray(w)), shape, jnp.float32))
    assert out.shape == shape
    assert np.max(np.abs(out - w)) <= 0.2 * np.max(np.abs(w))


def test_zero_blocks_stay_zero_and_finite():
    w = jnp.zeros((128,)).at[70].set(2.0)
    out = nf4.dequantize(nf4.quantize(w), w.shape)
    assert bool(jnp.all(jnp.isfinite(out))) and float(out[3]) == 0.0
    np.testing.assert_allclose(float(out[70]), 2.0, rtol=1e-2)


def test_dequantize_dtype_and_abstract_shapes():
    w = jnp.ones((64, 64))
    assert nf4.dequantize(nf4.quantize(w), w.shape, jnp.bfloat16).dtype == jnp.bfloat16
    abstract = nf4.abstract_quantized((64, 64))
    assert {k: v.shape for k, v in abstract.items()} == {k: v.shape for k, v in nf4.quantize(w).items()}


def test_quantize_base_replaces_layer_kernels_only():
    cfg = tiny_config("llama")
    params = init_params(cfg, jax.random.PRNGKey(0))
    q = quantize_base(params)
    attn = q["layers"]["self_attn"]["q_proj"]
    assert "kernel" not in attn and attn["kernel_codes"].shape[0] == cfg.num_layers  # stacked per layer
    assert "kernel" in q["lm_head"] and "embedding" in q["embed_tokens"]  # as bitsandbytes: head and embedding stay
    # Every quantised leaf has logical axes of its own rank.
    axes = quantized_axes(logical_axes(cfg))
    leaves = jax.tree_util.tree_leaves(q)
    specs = jax.tree_util.tree_leaves(axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    assert len(leaves) == len(specs) and all(len(s) == x.ndim for x, s in zip(leaves, specs))
