"""A decoder-only transformer in Flax Linen covering Llama, Mistral, Qwen2/3 and Starcoder2.

Submodule names mirror the Hugging Face module names (embed_tokens, self_attn,
q_proj, mlp, gate_proj, c_fc, input_layernorm, ...), so checkpoint mapping is
mechanical and PEFT target-module names mean the same thing as in HF PEFT.

Every parameter carries logical axis names (vocab, embed, mlp, heads,
kv_heads, head_dim, layers); activations carry `activation_*` names. Mapping
names to a device mesh is a config matter handled outside the model.

Usage:
    model = Transformer(cfg)
    params = model.init(rng, tokens)["params"]
    logits = model.apply({"params": params}, tokens, positions, segment_ids)
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from codejax.models import nf4
from codejax.models.adapters import (BottleneckAdapter, PeftSpec, adapted_projection, prefix_kv, prepend_prompt,
                                     soft_prompt)
from codejax.models.adapters import with_axes as _init
from codejax.models.config import ModelConfig
from codejax.models.rope import apply_rope, rope_cos_sin

# A window this large never excludes a key: it stands for "full attention" in
# the per-layer window array, so scanned layers can mix windowed and full.
NO_WINDOW = 2**30

_ACTIVATIONS = {
    "silu": nn.silu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
}

_REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    # Keep only the layer's named outputs (see checkpoint_name below): cheap memory, extra compute.
    "minimal": jax.checkpoint_policies.save_only_these_names("attn_out", "mlp_out"),
}


def _kernel_init():
    # HF initialiser for these families: normal(0, initializer_range=0.02).
    return nn.initializers.normal(0.02)


def attention_mask(segment_ids: jnp.ndarray, window: jnp.ndarray | int = NO_WINDOW) -> jnp.ndarray:
    """Boolean mask [batch, 1, q, k]: causal, within one segment, within the window.

    Segment id 0 marks padding; padded queries attend only to padding, which
    keeps every row non-empty (the diagonal is always allowed) so softmax never
    sees an all-masked row. A negative segment id marks shared positions (the
    soft prompt of prompt tuning) that every non-padding query may see.
    """
    length = segment_ids.shape[-1]
    idx = jnp.arange(length)
    delta = idx[:, None] - idx[None, :]  # q_index - k_index
    allowed = (delta >= 0) & (delta < window)
    same_segment = segment_ids[:, :, None] == segment_ids[:, None, :]
    shared = (segment_ids[:, None, :] < 0) & (segment_ids[:, :, None] != 0)
    return (allowed[None] & (same_segment | shared))[:, None]


def cache_attention_mask(key_mask: jnp.ndarray, cache_index, num_queries: int,
                         window: jnp.ndarray | int = NO_WINDOW) -> jnp.ndarray:
    """Decode-time mask [batch, 1, q, slots]: queries sit at slots cache_index.. of the KV cache.

    A query sees the valid (key_mask) slots at or before its own, within the
    window. Rows decode in lock-step (prompts are left-padded), so slot
    distance is position distance. Every query also sees its own slot, which
    keeps padded queries finite (their outputs are never used).
    """
    q_slots = cache_index + jnp.arange(num_queries)
    delta = q_slots[:, None] - jnp.arange(key_mask.shape[-1])[None, :]
    allowed = (delta >= 0) & (delta < window)
    return ((key_mask[:, None, :] & allowed[None]) | (delta == 0)[None])[:, None]


def _grouped_attention(q, k, v, mask):
    """Softmax attention (float32 softmax) with kv heads shared by groups of query heads.

    q [b, t, heads, d], k/v [b, s, kv_heads, d], mask [b, 1, t, s] -> [b, t, heads, d].
    """
    b, t, heads, d = q.shape
    kv_heads = k.shape[2]
    q = q.reshape(b, t, kv_heads, heads // kv_heads, d)
    scores = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32) / jnp.sqrt(d).astype(
        jnp.float32)
    scores = jnp.where(mask[:, :, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bkgts,bskd->btkgd", probs, v).reshape(b, t, heads, d)


def init_cache(cfg: ModelConfig, batch: int, length: int, dtype=None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """An empty KV cache (k, v), each [layers, batch, length, kv_heads, head_dim]."""
    shape = (cfg.num_layers, batch, length, cfg.num_kv_heads, cfg.head_dim)
    return jnp.zeros(shape, dtype or cfg.dtype), jnp.zeros(shape, dtype or cfg.dtype)


class RMSNorm(nn.Module):
    """x / rms(x) * scale, computed in float32 like the HF reference."""

    eps: float
    dtype: Any
    param_dtype: Any
    axis_name: str = "embed"

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", _init(nn.initializers.ones, self.axis_name),
                           (x.shape[-1],), self.param_dtype)
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return jnp.asarray(scale, self.dtype) * x32.astype(self.dtype)


class LayerNorm(nn.Module):
    """(x - mean) / std * scale + bias, statistics in float32."""

    eps: float
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, x):
        features = x.shape[-1]
        scale = self.param("scale", _init(nn.initializers.ones, "embed"), (features,), self.param_dtype)
        bias = self.param("bias", _init(nn.initializers.zeros, "embed"), (features,), self.param_dtype)
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(self.dtype)


def _norm(cfg: ModelConfig, name: str) -> nn.Module:
    cls = RMSNorm if cfg.norm == "rms" else LayerNorm
    return cls(eps=cfg.norm_eps, dtype=cfg.dtype, param_dtype=cfg.param_dtype, name=name)


class Projection(nn.Module):
    """Linear map over the last `n_in` dims of x: kernel [*in_dims, *features] with logical names.

    Every projection (q/k/v/o, MLP, lm_head) is one of these, so PEFT methods have a
    single module to hook and checkpoints see uniform `kernel` / `bias` leaves. (The
    kernel is created at its final shape: Flax's DenseGeneral creates it flat and
    reshapes, which breaks logical sharding constraints on the initialiser.)

    With a `peft` spec the projection is computed by `adapted_projection`
    (codejax/models/adapters.py), which adds LoRA, DoRA or (IA)3 from the method's
    collection; a QLoRA base stores the kernel as NF4 fields (kernel_codes,
    kernel_absmax, ...) that are dequantised here into `dtype`.
    """

    features: tuple[int, ...]
    axes: tuple[str, ...]  # logical names of the kernel dims, inputs first
    use_bias: bool
    dtype: Any
    param_dtype: Any
    n_in: int = 1
    peft: PeftSpec | None = None

    @nn.compact
    def __call__(self, x):
        n_in = self.n_in
        in_dims = x.shape[x.ndim - n_in:]
        shape = (*in_dims, *self.features)
        in_axes, out_axes = self.axes[:n_in], self.axes[n_in:]
        if self.has_variable("params", "kernel_codes"):  # a QLoRA base: NF4 storage
            kernel = nf4.dequantize({f: self.get_variable("params", f"kernel_{f}") for f in nf4.FIELDS},
                                    shape, self.dtype)
        else:
            kernel = self.param("kernel", _init(_kernel_init(), *self.axes), shape, self.param_dtype)
        x = x.astype(self.dtype)
        bias = (lambda: self.param("bias", _init(nn.initializers.zeros, *out_axes), self.features,
                                   self.param_dtype)) if self.use_bias else None
        return adapted_projection(self, self.peft, x, kernel, shape, in_axes, out_axes, bias)


class Attention(nn.Module):
    """Grouped-query self-attention with RoPE, optional q/k norm and sliding window."""

    cfg: ModelConfig
    peft: PeftSpec | None = None

    @nn.compact
    def __call__(self, x, cos, sin, segment_ids, window, prefix_kv=None, cache=None, layer_index=None,
                 cache_index=None, key_mask=None):
        cfg = self.cfg
        def dense(features, axes, name):
            return Projection(features, axes, cfg.qkv_bias, cfg.dtype, cfg.param_dtype, peft=self.peft, name=name)

        nh, nkv, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        q = dense((nh, hd), ("embed", "heads", "head_dim"), "q_proj")(x)
        k = dense((nkv, hd), ("embed", "kv_heads", "head_dim"), "k_proj")(x)
        v = dense((nkv, hd), ("embed", "kv_heads", "head_dim"), "v_proj")(x)
        if cfg.qk_norm:
            q = RMSNorm(cfg.norm_eps, cfg.dtype, cfg.param_dtype, "head_dim", name="q_norm")(q)
            k = RMSNorm(cfg.norm_eps, cfg.dtype, cfg.param_dtype, "head_dim", name="k_norm")(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q = nn.with_logical_constraint(q, ("activation_batch", "activation_length", "activation_heads", None))
        k = nn.with_logical_constraint(k, ("activation_batch", "activation_length", "activation_kv_heads", None))
        if cache is None:
            mask, new_cache = attention_mask(segment_ids, window), None
        else:  # decoding: write k, v at [layer, :, cache_index] and attend over every cache slot
            # The cache for all layers is updated in place (it is the scan carry); copying it
            # through scan inputs and outputs instead would move the whole cache every step.
            start = (layer_index, 0, cache_index, 0, 0)
            new_cache = tuple(jax.lax.dynamic_update_slice(c, t[None].astype(c.dtype), start)
                              for c, t in zip(cache, (k, v)))
            k, v = (jax.lax.dynamic_index_in_dim(c, layer_index, 0, keepdims=False) for c in new_cache)
            mask = cache_attention_mask(key_mask, cache_index, x.shape[1], window)
        if prefix_kv is not None:  # prefix tuning: learned keys/values every query may attend to
            batch, num_prefix = x.shape[0], prefix_kv.shape[1]
            k_pre, v_pre = (jnp.broadcast_to(p[None], (batch,) + p.shape).astype(k.dtype) for p in prefix_kv)
            k, v = jnp.concatenate([k_pre, k], axis=1), jnp.concatenate([v_pre, v.astype(k.dtype)], axis=1)
            mask = jnp.concatenate([jnp.ones(mask.shape[:3] + (num_prefix,), bool), mask], axis=-1)
        if cache is None:
            # dot_product_attention handles GQA (kv heads broadcast over query groups)
            # and does the softmax in float32.
            out = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=cfg.attention_impl)
        else:  # decoding: few queries against a long cache; grouped einsums never copy k/v per query head
            out = _grouped_attention(q, k, v, mask)
        out = Projection((cfg.hidden_size,), ("heads", "head_dim", "embed"), cfg.o_bias, cfg.dtype,
                         cfg.param_dtype, n_in=2, peft=self.peft, name="o_proj")(out)
        return out, new_cache


class MLP(nn.Module):
    """Gated (SwiGLU) MLP, or the plain two-layer GELU MLP of Starcoder2."""

    cfg: ModelConfig
    peft: PeftSpec | None = None

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        def dense(features, axes, name):
            return Projection((features,), axes, cfg.mlp_bias, cfg.dtype, cfg.param_dtype, peft=self.peft,
                              name=name)

        act = _ACTIVATIONS[cfg.activation]
        mlp_axes = ("activation_batch", "activation_length", "activation_mlp")
        if cfg.mlp == "glu":
            gate = dense(cfg.intermediate_size, ("embed", "mlp"), "gate_proj")(x)
            up = dense(cfg.intermediate_size, ("embed", "mlp"), "up_proj")(x)
            h = nn.with_logical_constraint(act(gate) * up, mlp_axes)
            return dense(cfg.hidden_size, ("mlp", "embed"), "down_proj")(h)
        h = nn.with_logical_constraint(act(dense(cfg.intermediate_size, ("embed", "mlp"), "c_fc")(x)), mlp_axes)
        return dense(cfg.hidden_size, ("mlp", "embed"), "c_proj")(h)


class DecoderLayer(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    cfg: ModelConfig
    peft: PeftSpec | None = None

    @nn.compact
    def __call__(self, carry, window, cos, sin, segment_ids, prefix_kv=None, layer_index=None, cache_index=None,
                 key_mask=None):
        """carry = (x, KV cache of every layer or None) -> (carry, None), as nn.scan expects."""
        cfg = self.cfg
        x, cache = carry
        act_axes = ("activation_batch", "activation_length", "activation_embed")
        x = nn.with_logical_constraint(x, act_axes)
        h, cache = Attention(cfg, self.peft, name="self_attn")(
            _norm(cfg, "input_layernorm")(x), cos, sin, segment_ids, window, prefix_kv, cache, layer_index,
            cache_index, key_mask)
        bottleneck = self.peft is not None and self.peft.layout.bottleneck
        if bottleneck:
            h = BottleneckAdapter(self.peft, cfg.dtype, cfg.param_dtype, name="attn_adapter")(h)
        x = x + checkpoint_name(h, "attn_out")
        h = MLP(cfg, self.peft, name="mlp")(_norm(cfg, "post_attention_layernorm")(x))
        if bottleneck:
            h = BottleneckAdapter(self.peft, cfg.dtype, cfg.param_dtype, name="mlp_adapter")(h)
        x = x + checkpoint_name(h, "mlp_out")
        x = nn.with_logical_constraint(x, act_axes)
        return (x, cache), None


def _layer_cls(cfg: ModelConfig):
    if cfg.remat_policy == "none":
        return DecoderLayer
    # prevent_cse matters only outside scan; inside scan it just blocks optimisations.
    return nn.remat(DecoderLayer, policy=_REMAT_POLICIES[cfg.remat_policy],
                    prevent_cse=not cfg.scan_layers)


class Transformer(nn.Module):
    """Causal language model. Returns float32 logits [batch, seq, vocab].

    tokens, positions, segment_ids: int [batch, seq]. positions default to
    0..seq-1; segment_ids default to all ones. Packed sequences use a distinct
    segment id per example and per-example positions; padding uses segment 0.
    With return_hidden=True the final-norm hidden states are returned instead
    (reward and value heads read them); with return_hidden="both", (logits, hidden).

    `peft` (a PeftSpec) adds a parameter-efficient method whose variables live
    in their own collection; see codejax/models/adapters.py.
    """

    cfg: ModelConfig
    peft: PeftSpec | None = None

    @nn.compact
    def __call__(self, tokens, positions=None, segment_ids=None, *, return_hidden: bool = False, cache=None,
                 cache_index=None, key_mask=None, prefill: bool = True):
        """Logits [batch, seq, vocab]; with a KV `cache`, (logits, updated cache).

        Decoding (see codejax.generate): `cache` from `init_cache`, the new
        tokens written at slot `cache_index`, `key_mask` [batch, slots] marking
        the valid slots (the new ones included). A prompt-tuning soft prompt is
        prepended on the `prefill` call only (it takes the first P slots);
        later calls just shift positions past it.
        """
        cfg, spec = self.cfg, self.peft
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[-1]), tokens.shape)
        if segment_ids is None:
            segment_ids = jnp.ones_like(tokens)
        embed = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                         embedding_init=_init(_kernel_init(), "vocab", "embed"), name="embed_tokens")
        x = embed(tokens)
        layout = spec.layout if spec is not None else None
        prompt = soft_prompt(self, spec, cfg, embed) if layout and layout.soft_prompt else None
        if prompt is not None and not prefill:  # decoding after the soft prompt is in the cache
            positions, prompt = positions + prompt.shape[0], None
        if prompt is not None:
            x, positions, segment_ids = prepend_prompt(prompt.astype(x.dtype), x, positions, segment_ids)
        prefix = prefix_kv(self, spec, cfg) if layout and layout.prefix else None
        cos, sin = rope_cos_sin(cfg, positions)
        windows = [NO_WINDOW if w is None else w for w in cfg.layer_windows()]

        if cfg.scan_layers:
            scanned = nn.scan(
                _layer_cls(cfg), variable_axes={True: 0}, split_rngs={True: True},
                in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, 0, 0, nn.broadcast, nn.broadcast),
                length=cfg.num_layers, metadata_params={nn.PARTITION_NAME: "layers"})
            (x, cache), _ = scanned(cfg, peft=spec, name="layers")(
                (x, cache), jnp.asarray(windows, jnp.int32), cos, sin, segment_ids, prefix,
                jnp.arange(cfg.num_layers), cache_index, key_mask)
        else:
            layer = _layer_cls(cfg)
            for i, window in enumerate(windows):
                (x, cache), _ = layer(cfg, peft=spec, name=f"layers_{i}")(
                    (x, cache), window, cos, sin, segment_ids, None if prefix is None else prefix[i],
                    i, cache_index, key_mask)

        x = _norm(cfg, "norm")(x)
        if prompt is not None:  # outputs only for the real tokens
            x = x[:, prompt.shape[0]:]
        if return_hidden is True:
            return x if cache is None else (x, cache)
        if cfg.tie_embeddings:
            logits = embed.attend(x)
        else:
            logits = Projection((cfg.vocab_size,), ("embed", "vocab"), False, cfg.dtype, cfg.param_dtype,
                                peft=spec, name="lm_head")(x)
        logits = nn.with_logical_constraint(
            logits, ("activation_batch", "activation_length", "activation_vocab"))
        if return_hidden == "both":  # one pass for PPO's policy and shared value head
            return logits.astype(jnp.float32), x
        return logits.astype(jnp.float32) if cache is None else (logits.astype(jnp.float32), cache)
