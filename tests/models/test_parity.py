"""Parity with transformers' PyTorch models, for every supported family.

Each case builds a random tiny model with transformers, saves it to a temp
directory, loads it with codejax.models.load_hf and compares float32 logits.
Variants cover each family's distinctive parts: llama3 / linear / yarn rope
scaling, qkv bias, q/k norm, a decoupled head_dim, LayerNorm + GELU MLP,
tied embeddings and sliding windows (global and per layer).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from codejax.models import load_hf, save_hf, stack_layers, unstack_layers

ATOL = 1e-4
SIZES = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
             initializer_range=0.1)  # a larger init than HF's 0.02 makes logits O(1), so errors show

CASES = {
    "llama3": (transformers.LlamaConfig, transformers.LlamaForCausalLM, dict(
        rope_theta=50000.0, rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                              high_freq_factor=4.0,
                                              original_max_position_embeddings=64))),
    "llama_linear_bias": (transformers.LlamaConfig, transformers.LlamaForCausalLM, dict(
        rope_scaling=dict(rope_type="linear", factor=4.0), attention_bias=True, mlp_bias=True)),
    "mistral_window": (transformers.MistralConfig, transformers.MistralForCausalLM, dict(
        sliding_window=5, head_dim=16)),
    "qwen2_yarn_tied": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, dict(
        tie_word_embeddings=True,
        rope_scaling=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=64))),
    "qwen2_layer_windows": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, dict(
        use_sliding_window=True, sliding_window=4, max_window_layers=1)),
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM, dict(head_dim=24)),
    "starcoder2": (transformers.Starcoder2Config, transformers.Starcoder2ForCausalLM, dict(
        sliding_window=6, norm_epsilon=1e-5)),
}


def _build_hf(case, tmp_path_factory):
    config_cls, model_cls, extra = CASES[case]
    torch.manual_seed(0)
    config = config_cls(**SIZES, **extra, attn_implementation="eager")
    model = model_cls(config).eval()
    with torch.no_grad():  # give norms and biases non-trivial values so their mapping is tested
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    path = tmp_path_factory.mktemp(case)
    model.save_pretrained(path)
    return model, path


@pytest.fixture(scope="module", params=sorted(CASES))
def hf_case(request, tmp_path_factory):
    model, path = _build_hf(request.param, tmp_path_factory)
    return request.param, model, path


def _batch(seed=0, batch=2, length=12, vocab=96):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, size=(batch, length))
    mask = np.ones((batch, length), np.int64)
    mask[1, :3] = 0  # left padding on the second row
    mask[0, -2:] = 0  # right padding on the first row
    positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
    return tokens, mask, positions


def _hf_logits(model, tokens, mask=None, positions=None):
    kwargs = {}
    if mask is not None:
        kwargs = dict(attention_mask=torch.tensor(mask), position_ids=torch.tensor(positions))
    with torch.no_grad():
        return model(torch.tensor(tokens), **kwargs).logits.float().numpy()


def test_logits_match_without_padding(hf_case):
    _, hf_model, path = hf_case
    tokens = np.random.default_rng(1).integers(0, 96, size=(2, 16))
    model, params = load_hf(path)
    ours = np.asarray(jax.jit(model.apply)({"params": params}, jnp.asarray(tokens)))
    np.testing.assert_allclose(ours, _hf_logits(hf_model, tokens), atol=ATOL, rtol=0)
    assert np.abs(ours).max() > 0.05, "logits too small for the comparison to mean anything"


def test_logits_match_with_padding_and_far_positions(hf_case):
    _, hf_model, path = hf_case
    tokens, mask, positions = _batch()
    positions = positions + 150  # far positions exercise the rope scaling of each variant
    model, params = load_hf(path)
    ours = np.asarray(model.apply({"params": params}, jnp.asarray(tokens), jnp.asarray(positions),
                                  jnp.asarray(mask)))
    ref = _hf_logits(hf_model, tokens, mask, positions)
    real = mask.astype(bool)
    np.testing.assert_allclose(ours[real], ref[real], atol=ATOL, rtol=0)


def test_save_hf_then_transformers_load(hf_case, tmp_path):
    _, hf_model, path = hf_case
    model, params = load_hf(path)
    save_hf(tmp_path / "out", model.cfg, params, max_shard_bytes=64 * 1024)  # force sharding
    assert (tmp_path / "out" / "model.safetensors.index.json").exists()
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out",
                                                                 attn_implementation="eager")
    assert type(reloaded) is type(hf_model)
    tokens, mask, positions = _batch(seed=2)
    real = mask.astype(bool)
    np.testing.assert_allclose(_hf_logits(reloaded, tokens, mask, positions)[real],
                               _hf_logits(hf_model, tokens, mask, positions)[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", ["llama3", "qwen2_layer_windows", "qwen3", "starcoder2"])
def test_scan_and_remat_switches_keep_outputs_and_grads(case, tmp_path_factory):
    """Scan on/off and remat on/off give the same logits and gradients (one case per family)."""
    _, path = _build_hf(case, tmp_path_factory)
    tokens, mask, positions = _batch(seed=3)
    args = (jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(mask))
    scanned, params = load_hf(path, scan_layers=True, remat_policy="none")
    num_layers = scanned.cfg.num_layers
    # The two layouts convert into each other exactly.
    restacked = stack_layers(unstack_layers(params), num_layers)
    for a, b in zip(jax.tree_util.tree_leaves(restacked), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(a, b)

    def loss_and_grad(model, p):
        return jax.jit(jax.value_and_grad(lambda p: model.apply({"params": p}, *args).mean()))(p)

    ref_logits = scanned.apply({"params": params}, *args)
    ref_loss, ref_grad = loss_and_grad(scanned, params)
    variants = [(False, "none"), (True, "full"), (False, "minimal")]
    for scan, remat in variants:
        model = scanned.clone(cfg=scanned.cfg.replace(scan_layers=scan, remat_policy=remat))
        p = params if scan else unstack_layers(params)
        np.testing.assert_allclose(model.apply({"params": p}, *args), ref_logits, atol=1e-5, rtol=0,
                                   err_msg=f"scan={scan} remat={remat}")
        loss, grad = loss_and_grad(model, p)
        grad = grad if scan else stack_layers(grad, num_layers)
        np.testing.assert_allclose(loss, ref_loss, atol=1e-6)
        for a, b in zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(ref_grad)):
            np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4, err_msg=f"scan={scan} remat={remat}")
