"""Every PEFT method: identity at init, frozen base, parameter counts, merge, and learning."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from codejax.models import Transformer, init_params, tiny_config
from codejax.peft import (PeftSpec, count_params, dequantize_base, init_adapters, merge, quantize_base,
                          unmerge)
from codejax.models.adapters import METHODS
from codejax.objectives.lm import lm_loss_fn
from codejax.train.step import init_train_state, make_train_step

CFG = tiny_config("llama")  # hidden 64, 2 layers, 4 heads of 16, 2 kv heads, mlp 128 (scanned)
TRAINABLE = [m for m in METHODS if m != "none"]
# Methods whose output equals the base model's before any training.
IDENTITY_AT_INIT = ("lora", "qlora", "dora", "adapter", "ia3")


def _tokens(seed=0, shape=(2, 12)):
    return jax.random.randint(jax.random.PRNGKey(seed), shape, 0, CFG.vocab_size)


@pytest.fixture(scope="module")
def base():
    return init_params(CFG, jax.random.PRNGKey(0))


def _setup(method, base, cfg=CFG, **spec):
    model = Transformer(cfg, peft=PeftSpec(method, **spec))
    frozen = quantize_base(base) if method == "qlora" else base
    return model, frozen, init_adapters(model, frozen, jax.random.PRNGKey(1))


def _perturbed(adapters, scale=0.05, seed=7):
    """Adapters moved away from init (LoRA's B = 0 would make every comparison trivial)."""
    leaves, tree = jax.tree_util.tree_flatten(adapters)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree_util.tree_unflatten(
        tree, [x + scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])


def _base_logits(params, tokens, cfg=CFG):
    return Transformer(cfg).apply({"params": params}, tokens)


@pytest.mark.parametrize("method", IDENTITY_AT_INIT)
def test_output_equals_the_base_at_init(method, base):
    model, frozen, adapters = _setup(method, base, target_modules=("all-linear",))
    tokens = _tokens()
    reference = _base_logits(dequantize_base(frozen, CFG), tokens)
    got = model.apply({"params": frozen, **adapters}, tokens)
    np.testing.assert_allclose(got, reference, atol=2e-6)
    # ... and a moved adapter does change it, so the comparison above can fail.
    moved = model.apply({"params": frozen, **_perturbed(adapters)}, tokens)
    assert float(jnp.max(jnp.abs(moved - reference))) > 1e-3


@pytest.mark.parametrize("method", TRAINABLE)
def test_without_the_collection_the_model_is_the_base(method, base):
    model, frozen, adapters = _setup(method, base)
    tokens = _tokens(1)
    off = model.apply({"params": frozen}, tokens)
    # (QLoRA dequantises inside the forward pass, which XLA may fuse differently: float32 rounding.)
    np.testing.assert_allclose(off, _base_logits(dequantize_base(frozen, CFG), tokens), atol=1e-6, rtol=0)
    on = model.apply({"params": frozen, **_perturbed(adapters)}, tokens)
    assert float(jnp.max(jnp.abs(on - off))) > 1e-3


def _expected_trainable(method, cfg=CFG, rank=8, targets=("q_proj", "v_proj"), n_virtual=20, bottleneck=64,
                        prefix_projection=False, prefix_hidden=512):
    h, L = cfg.hidden_size, cfg.num_layers
    q_out, kv_out = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    shapes = {"q_proj": (h, q_out), "k_proj": (h, kv_out), "v_proj": (h, kv_out), "o_proj": (q_out, h),
              "gate_proj": (h, cfg.intermediate_size), "up_proj": (h, cfg.intermediate_size),
              "down_proj": (cfg.intermediate_size, h)}
    if method in ("lora", "qlora"):
        return L * sum(rank * (shapes[t][0] + shapes[t][1]) for t in targets)
    if method == "dora":
        return L * sum(rank * (shapes[t][0] + shapes[t][1]) + shapes[t][1] for t in targets)
    if method == "ia3":  # outputs of k and v, input of down
        return L * (2 * kv_out + cfg.intermediate_size)
    if method == "prompt":
        return n_virtual * h
    if method == "prefix":
        kv = L * 2 * n_virtual * kv_out
        if not prefix_projection:
            return kv
        return n_virtual * h + h * prefix_hidden + prefix_hidden + prefix_hidden * (kv // n_virtual) + kv // n_virtual
    if method == "adapter":  # two adapters per layer: down + bias, up + bias
        return L * 2 * (h * bottleneck + bottleneck + bottleneck * h + h)
    raise AssertionError(method)


@pytest.mark.parametrize("method", TRAINABLE)
def test_trainable_parameter_count(method, base):
    _, _, adapters = _setup(method, base)
    assert count_params(adapters) == _expected_trainable(method)


def test_trainable_count_with_other_settings(base):
    targets = ("q_proj", "k_proj", "o_proj", "down_proj")
    _, _, adapters = _setup("lora", base, rank=4, target_modules=targets)
    assert count_params(adapters) == _expected_trainable("lora", rank=4, targets=targets)
    _, _, adapters = _setup("prefix", base, prefix_projection=True, prefix_hidden_size=32, num_virtual_tokens=5)
    assert count_params(adapters) == _expected_trainable("prefix", n_virtual=5, prefix_projection=True,
                                                         prefix_hidden=32)


def test_all_linear_and_regex_targets(base):
    _, _, adapters = _setup("lora", base, target_modules=("all-linear",))
    assert sorted(adapters["lora"]["layers"]["self_attn"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert sorted(adapters["lora"]["layers"]["mlp"]) == ["down_proj", "gate_proj", "up_proj"]
    assert "lm_head" not in adapters["lora"]
    _, _, adapters = _setup("lora", base, target_modules=(r"re:.*mlp\.(up|down)_proj",))
    assert list(adapters["lora"]["layers"]) == ["mlp"]
    assert sorted(adapters["lora"]["layers"]["mlp"]) == ["down_proj", "up_proj"]
    with pytest.raises(ValueError, match=r"peft\.target_modules='re:.*nothing.*' matches no module"):
        _setup("lora", base, target_modules=(r"re:.*nothing",))


@pytest.mark.parametrize("method", ["lora", "qlora", "dora", "ia3"])
@pytest.mark.parametrize("scan", [True, False])
def test_merged_logits_equal_the_adapter_logits(method, scan):
    cfg = CFG.replace(scan_layers=scan)
    base = init_params(cfg, jax.random.PRNGKey(0))
    model, frozen, adapters = _setup(method, base, cfg, target_modules=("all-linear",))
    adapters = _perturbed(adapters)
    tokens = _tokens(2)
    merged = merge(model, {"params": frozen, **adapters})
    np.testing.assert_allclose(_base_logits(merged, tokens, cfg), model.apply({"params": frozen, **adapters}, tokens),
                               atol=2e-5)
    if method in ("lora", "ia3"):  # unmerge gives the base back
        for got, want in zip(jax.tree_util.tree_leaves(unmerge(model, merged, adapters)),
                             jax.tree_util.tree_leaves(base)):
            np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("method", ["prefix", "prompt", "adapter"])
def test_unmergeable_methods_say_so(method, base):
    model, frozen, adapters = _setup(method, base)
    with pytest.raises(ValueError, match="cannot be merged"):
        merge(model, {"params": frozen, **adapters})


def test_dora_unmerge_explains_why_not(base):
    model, frozen, adapters = _setup("dora", base)
    with pytest.raises(ValueError, match="keep the base"):
        unmerge(model, merge(model, {"params": frozen, **adapters}), adapters)


def test_two_named_adapters_switch_on_one_base(base):
    model, frozen, first = _setup("lora", base)
    second = init_adapters(model, frozen, jax.random.PRNGKey(9))
    bank = {"python": _perturbed(first, seed=1), "sql": _perturbed(second, seed=2)}
    tokens = _tokens(3)
    outputs = {name: model.apply({"params": frozen, **adapters}, tokens) for name, adapters in bank.items()}
    assert float(jnp.max(jnp.abs(outputs["python"] - outputs["sql"]))) > 1e-3
    # Switching back gives the same output again: nothing of the other adapter stayed behind.
    np.testing.assert_array_equal(model.apply({"params": frozen, **bank["python"]}, tokens), outputs["python"])


def _lm_batch(seed=0, rows=8, length=24):
    rng = np.random.default_rng(seed)
    # Text over a 10-token alphabet: even a soft prompt can learn to favour those tokens.
    seq = rng.integers(100, 110, (rows, length + 1))
    return {"inputs": jnp.asarray(seq[:, :-1], jnp.int32), "targets": jnp.asarray(seq[:, 1:], jnp.int32),
            "weights": jnp.ones((rows, length), jnp.float32), "segment_ids": jnp.ones((rows, length), jnp.int32),
            "positions": jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (rows, length))}


_LR = {"lora": 1e-2, "qlora": 1e-2, "dora": 1e-2, "prefix": 3e-2, "prompt": 3e-2, "adapter": 1e-2, "ia3": 3e-2}


@pytest.mark.slow
@pytest.mark.parametrize("method", TRAINABLE)
def test_training_moves_only_the_adapter_and_lowers_the_loss(method, base):
    model, frozen, adapters = _setup(method, base, dropout=0.1 if method == "lora" else 0.0)
    before = jax.tree_util.tree_map(np.array, frozen)
    optimizer = optax.adam(_LR[method])
    step = make_train_step(lm_loss_fn(model), optimizer, optax.constant_schedule(_LR[method]))
    state = init_train_state(adapters, optimizer, seed=0)
    assert set(state["params"]) == {PeftSpec(method).collection}  # the optimizer sees only the adapter
    batch = _lm_batch()
    losses = []
    for _ in range(25):
        state, metrics = step(state, batch, {"params": frozen})
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0] - 0.1, losses
    # The base is bit-identical after training (it is never differentiated or donated).
    for got, want in zip(jax.tree_util.tree_leaves(frozen), jax.tree_util.tree_leaves(before)):
        np.testing.assert_array_equal(np.asarray(got), want)
    # Optimizer moments exist for the adapter leaves only.
    n_moments = sum(x.size for x in jax.tree_util.tree_leaves(state["opt_state"]) if x.ndim)
    assert n_moments == 2 * count_params(adapters)


def test_lora_dropout_is_active_only_with_an_rng(base):
    model, frozen, adapters = _setup("lora", base, dropout=0.5)
    adapters, tokens = _perturbed(adapters, 0.5), _tokens(4)
    variables = {"params": frozen, **adapters}
    deterministic = model.apply(variables, tokens)
    np.testing.assert_array_equal(deterministic, model.apply(variables, tokens))
    dropped = model.apply(variables, tokens, rngs={"dropout": jax.random.PRNGKey(0)})
    assert float(jnp.max(jnp.abs(dropped - deterministic))) > 1e-4


def test_rslora_scale(base):
    assert PeftSpec("lora", rank=16, alpha=32).scale == 2.0
    assert PeftSpec("lora", rank=16, alpha=32, rslora=True).scale == 8.0


def test_prompt_tuning_keeps_packed_examples_apart(base):
    """Each packed example sees the soft prompt and itself, never its neighbour."""
    model, frozen, adapters = _setup("prompt", base, num_virtual_tokens=4)
    adapters = _perturbed(adapters, 0.5)
    variables = {"params": frozen, **adapters}
    a, b = _tokens(5, (1, 5)), _tokens(6, (1, 7))
    packed = jnp.concatenate([a, b], axis=1)
    segments = jnp.asarray([[1] * 5 + [2] * 7])
    positions = jnp.asarray([list(range(5)) + list(range(7))])
    out = model.apply(variables, packed, positions, segments)
    assert out.shape == (1, 12, CFG.vocab_size)
    np.testing.assert_allclose(out[:, :5], model.apply(variables, a), atol=1e-5)
    np.testing.assert_allclose(out[:, 5:], model.apply(variables, b), atol=1e-5)


def test_prompt_init_from_vocab_and_text_copies_embedding_rows(base):
    table = np.asarray(base["embed_tokens"]["embedding"])
    _, _, adapters = _setup("prompt", base, num_virtual_tokens=5, prompt_init="text", prompt_init_ids=(3, 9))
    np.testing.assert_array_equal(adapters["prompt"]["embedding"], table[[3, 9, 3, 9, 3]])
    _, _, adapters = _setup("prompt", base, num_virtual_tokens=5, prompt_init="vocab")
    rows = np.asarray(adapters["prompt"]["embedding"])
    assert all(any(np.array_equal(r, t) for t in table) for r in rows)


def test_prefix_tuning_with_projection_is_a_function_of_the_embedding(base):
    model, frozen, adapters = _setup("prefix", base, prefix_projection=True, prefix_hidden_size=32,
                                     num_virtual_tokens=3)
    tokens = _tokens(8)
    out = model.apply({"params": frozen, **adapters}, tokens)
    assert out.shape == (2, 12, CFG.vocab_size) and bool(jnp.all(jnp.isfinite(out)))
    moved = jax.tree_util.tree_map(lambda x: x, adapters)
    moved["prefix"]["embedding"] = moved["prefix"]["embedding"] + 1.0
    assert float(jnp.max(jnp.abs(model.apply({"params": frozen, **moved}, tokens) - out))) > 1e-4


def test_spec_errors_are_clear():
    with pytest.raises(ValueError, match="peft.method"):
        PeftSpec("loha")
    with pytest.raises(ValueError, match="regex"):
        PeftSpec("lora", target_modules=("re:(unclosed",))
    with pytest.raises(ValueError, match=r"peft\.target_modules: unknown module 'q_projj'; did you mean 'q_proj'"):
        PeftSpec("lora", target_modules=("q_proj", "q_projj"))
    with pytest.raises(ValueError, match=r"peft\.ia3_target_modules: unknown module 'v_prj'"):
        PeftSpec("ia3", ia3_target_modules=("v_prj",))
    with pytest.raises(ValueError, match="prompt_init_text"):
        PeftSpec("prompt", prompt_init="text")


def test_dora_magnitude_starts_at_the_column_norms(base):
    _, _, adapters = _setup("dora", base)
    kernel = np.asarray(base["layers"]["self_attn"]["q_proj"]["kernel"])  # [L, embed, heads, head_dim]
    np.testing.assert_allclose(adapters["lora"]["layers"]["self_attn"]["q_proj"]["lora_magnitude"],
                               np.sqrt((kernel ** 2).sum(axis=1)), rtol=1e-6)
    assert math.isclose(PeftSpec("dora").scale, 2.0)
