"""Model behaviour that needs no reference implementation: masks, packing, axes, dtypes, counts."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codejax.models import (FAMILIES, Transformer, abstract_params, attention_mask, count_leaves,
                            flops_per_token, init_params, logical_axes, param_counts, preset_config,
                            tiny_config)
from codejax.models.transformer import NO_WINDOW

LOGICAL_NAMES = {"vocab", "embed", "mlp", "heads", "kv_heads", "head_dim", "layers"}


def test_attention_mask_matches_explicit_rule():
    segments = np.array([[1, 1, 1, 2, 2, 0], [0, 0, 3, 3, 3, 3]])
    for window in (NO_WINDOW, 2):
        mask = np.asarray(attention_mask(jnp.asarray(segments), window))
        assert mask.shape == (2, 1, 6, 6)
        for b in range(2):
            for q in range(6):
                for k in range(6):
                    expected = k <= q and q - k < window and segments[b, q] == segments[b, k]
                    assert mask[b, 0, q, k] == expected, (b, q, k, window)


@pytest.mark.parametrize("family", ["llama", "starcoder2"])
def test_packed_sequences_do_not_attend_across_examples(family):
    cfg = tiny_config(family, num_layers=2)
    model = Transformer(cfg)
    params = init_params(cfg, jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, cfg.vocab_size, 5), rng.integers(0, cfg.vocab_size, 7)
    packed = np.concatenate([a, b])[None]
    segments = np.array([[1] * 5 + [2] * 7])
    positions = np.array([list(range(5)) + list(range(7))])
    out = model.apply({"params": params}, jnp.asarray(packed), jnp.asarray(positions), jnp.asarray(segments))
    alone_a = model.apply({"params": params}, jnp.asarray(a[None]))
    alone_b = model.apply({"params": params}, jnp.asarray(b[None]))
    np.testing.assert_allclose(out[0, :5], alone_a[0], atol=1e-5)
    np.testing.assert_allclose(out[0, 5:], alone_b[0], atol=1e-5)
    # Without segment ids the second example would see the first: the test can tell.
    leaky = model.apply({"params": params}, jnp.asarray(packed), jnp.asarray(positions))
    assert np.abs(np.asarray(leaky[0, 5:]) - np.asarray(alone_b[0])).max() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("scan", [True, False])
def test_every_param_has_logical_axes(family, scan):
    cfg = tiny_config(family, scan_layers=scan)
    shapes = abstract_params(cfg)
    axes = logical_axes(cfg)
    shape_leaves = jax.tree_util.tree_leaves_with_path(shapes)
    axes_leaves = jax.tree_util.tree_leaves(axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    assert len(shape_leaves) == len(axes_leaves)
    for (path, shape), spec in zip(shape_leaves, axes_leaves):
        name = jax.tree_util.keystr(path)
        assert len(spec) == len(shape.shape), name
        assert set(spec) <= LOGICAL_NAMES, (name, spec)
        assert (spec[0] == "layers") == (scan and "layers" in name), (name, spec)


def test_kernel_axes_name_their_dimensions():
    cfg = tiny_config("qwen3", scan_layers=True)
    axes, shapes = logical_axes(cfg), abstract_params(cfg)
    attn = axes["layers"]["self_attn"]
    assert tuple(attn["q_proj"]["kernel"]) == ("layers", "embed", "heads", "head_dim")
    assert tuple(attn["k_proj"]["kernel"]) == ("layers", "embed", "kv_heads", "head_dim")
    assert tuple(attn["o_proj"]["kernel"]) == ("layers", "heads", "head_dim", "embed")
    assert tuple(attn["q_norm"]["scale"]) == ("layers", "head_dim")
    assert tuple(axes["embed_tokens"]["embedding"]) == ("vocab", "embed")
    assert shapes["layers"]["self_attn"]["q_proj"]["kernel"].shape == (2, 64, 4, 32)
    assert shapes["layers"]["self_attn"]["k_proj"]["kernel"].shape == (2, 64, 2, 32)


def test_param_and_compute_dtypes_are_separate():
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 512, (2, 10)))
    cfg32 = tiny_config("llama")
    params32 = init_params(cfg32, jax.random.PRNGKey(0))
    ref = Transformer(cfg32).apply({"params": params32}, tokens)

    # bf16 compute over fp32 master weights: weights stay fp32, logits come back fp32.
    bf16_compute = Transformer(cfg32.replace(dtype="bfloat16"))
    out = bf16_compute.apply({"params": params32}, tokens)
    assert out.dtype == jnp.float32
    assert 0 < np.abs(np.asarray(out - ref)).max() < 0.05

    # bf16 storage: init creates bf16 leaves.
    cfg16 = cfg32.replace(param_dtype="bfloat16", dtype="bfloat16")
    params16 = init_params(cfg16, jax.random.PRNGKey(0))
    assert {x.dtype for x in jax.tree_util.tree_leaves(params16)} == {jnp.dtype("bfloat16")}
    assert np.isfinite(np.asarray(Transformer(cfg16).apply({"params": params16}, tokens))).all()


VARIANTS = [
    tiny_config("llama"),
    tiny_config("llama", qkv_bias=True, o_bias=True, mlp_bias=True, tie_embeddings=True),
    tiny_config("mistral", sliding_window=8),
    tiny_config("qwen2", tie_embeddings=True),
    tiny_config("qwen3"),
    tiny_config("starcoder2"),
    tiny_config("starcoder2", tie_embeddings=False, scan_layers=False),
]


@pytest.mark.parametrize("cfg", VARIANTS, ids=lambda c: f"{c.family}-tie{c.tie_embeddings}-bias{c.o_bias}")
def test_param_counter_matches_initialised_model(cfg):
    assert param_counts(cfg)["total"] == count_leaves(abstract_params(cfg))


@pytest.mark.parametrize("name,expected", [
    ("llama2-7b", 6_738_415_616),
    ("llama3-8b", 8_030_261_248),
    ("qwen2.5-coder-1.5b", 1_543_714_304),
    ("starcoder2-3b", 3_030_371_328),
])
def test_param_counter_matches_published_sizes(name, expected):
    assert param_counts(preset_config(name))["total"] == expected


def test_flops_formula():
    cfg = tiny_config("llama", num_layers=3)
    n, t = param_counts(cfg)["matmul"], 128
    attn = 3 * 4 * t * cfg.num_heads * cfg.head_dim
    assert flops_per_token(cfg, t, training=False) == 2 * n + attn
    assert flops_per_token(cfg, t) == 3 * (2 * n + attn)
    assert flops_per_token(cfg, t, causal=True) == 3 * (2 * n + attn / 2)
    # A sliding window caps the context each query attends to.
    windowed = cfg.replace(sliding_window=16)
    assert flops_per_token(windowed, t, training=False) == 2 * n + 3 * 4 * 16 * cfg.num_heads * cfg.head_dim
    # The matmul count includes the output projection even when it is tied to the embedding.
    tied = cfg.replace(tie_embeddings=True)
    assert param_counts(tied)["matmul"] == n
    assert param_counts(tied)["total"] == param_counts(cfg)["total"] - cfg.vocab_size * cfg.hidden_size


@pytest.mark.parametrize("field,value,match", [
    ("family", "gpt2", "family"),
    ("num_kv_heads", 3, "num_kv_heads"),
    ("remat_policy", "sometimes", "remat_policy"),
    ("rope_scaling", {"rope_type": "dynamic", "factor": 2.0}, "dynamic"),
])
def test_invalid_config_names_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        tiny_config("llama").replace(**{field: value})
