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

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from codejax.models.config import ModelConfig
from codejax.models.rope import apply_rope, rope_cos_sin
from codejax.peft import nf4
from codejax.peft.spec import PeftSpec

# A window this large never excludes a key: it stands for "full attention" in
# the per-layer window array, so scanned layers can mix windowed and full.
NO_WINDOW = 2**30

_ACTIVATIONS = {
    "silu": nn.silu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
}

_ADAPTER_ACTIVATIONS = {"gelu": _ACTIVATIONS["gelu"], "relu": nn.relu, "silu": nn.silu, "tanh": jnp.tanh}

_REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    # Keep only the layer's named outputs (see checkpoint_name below): cheap memory, extra compute.
    "minimal": jax.checkpoint_policies.save_only_these_names("attn_out", "mlp_out"),
}


def _init(init_fn, *names: str | None):
    return nn.with_logical_partitioning(init_fn, names)


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


def _adapter_variable(module: nn.Module, collection: str, name: str, init_fn):
    """A PEFT variable's value, or None when the method is switched off.

    The variable exists when the caller passes its collection to `apply` (or
    lets it be created: `init`, or `apply(..., mutable=[collection])`, where
    `init_fn()` runs and may read the base weights). Without the collection the
    module computes the base model.
    """
    if not (module.has_variable(collection, name) or module.is_mutable_collection(collection)):
        return None
    return module.variable(collection, name, init_fn).value


def _contract(x, w, n: int):
    """Contract the last `n` dims of x with the first `n` dims of w."""
    return jax.lax.dot_general(x, w, ((tuple(range(x.ndim - n, x.ndim)), tuple(range(n))), ((), ())))


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

    With a `peft` spec a targeted projection adds LoRA (or DoRA) or (IA)3 from
    its own collection; a QLoRA base stores the kernel as NF4 fields
    (kernel_codes, kernel_absmax, ...) that are dequantised here into `dtype`.
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
        spec, path = self.peft, tuple(self.scope.path)
        x = x.astype(self.dtype)
        ia3 = spec.ia3_mode(self.name, path) if spec else None
        ia3_scale = ia3 and _adapter_variable(self, "ia3", "ia3_scale", lambda: _init(
            nn.initializers.ones, *(in_axes if ia3 == "in" else out_axes))(
                None, in_dims if ia3 == "in" else self.features, self.param_dtype))
        if ia3 == "in" and ia3_scale is not None:
            x = x * ia3_scale.astype(self.dtype)
        y = _contract(x, kernel.astype(self.dtype), n_in)
        if spec is not None and spec.targets(self.name, path):
            y = self._lora(x, y, kernel, shape, in_axes, out_axes)
        if self.use_bias:
            bias = self.param("bias", _init(nn.initializers.zeros, *out_axes), self.features,
                              self.param_dtype)
            y = y + bias.astype(self.dtype)
        if ia3 == "out" and ia3_scale is not None:
            y = y * ia3_scale.astype(self.dtype)
        return y

    def _lora(self, x, y, kernel, shape, in_axes, out_axes):
        """y + scale * B(A(dropout(x))); DoRA rescales each output column to a learned magnitude."""
        spec, n_in = self.peft, self.n_in
        in_dims = shape[:n_in]
        fan_in = math.prod(in_dims)

        def init_a(rng, a_shape, dtype):  # kaiming-uniform(a=sqrt(5)), as torch Linear and HF PEFT
            bound = 1.0 / math.sqrt(fan_in)
            return jax.random.uniform(rng, a_shape, dtype, -bound, bound)

        a = _adapter_variable(self, "lora", "lora_a", lambda: _init(init_a, *in_axes, "lora_rank")(
            self.make_rng("params"), (*in_dims, spec.rank), self.param_dtype))
        if a is None:  # adapters switched off
            return y
        b = _adapter_variable(self, "lora", "lora_b", lambda: _init(nn.initializers.zeros, "lora_rank", *out_axes)(
            None, (spec.rank, *self.features), self.param_dtype))
        if spec.dropout and self.has_rng("dropout"):
            x = nn.Dropout(spec.dropout)(x, deterministic=False)
        delta = _contract(_contract(x, a.astype(self.dtype), n_in), b.astype(self.dtype), 1) * spec.scale
        if spec.method != "dora":
            return y + delta

        def column_norm(a, b):
            w = kernel.astype(jnp.float32) + spec.scale * _contract(a.astype(jnp.float32), b.astype(jnp.float32), 1)
            return jnp.sqrt(jnp.sum(jnp.square(w), axis=tuple(range(n_in))))

        magnitude = _adapter_variable(self, "lora", "lora_magnitude", lambda: _init(
            lambda *_: column_norm(a, b).astype(self.param_dtype), *out_axes)(None))
        # The norm is treated as a constant in the backward pass (DoRA paper, section 4.3), as in HF PEFT.
        rescale = magnitude.astype(jnp.float32) / jax.lax.stop_gradient(column_norm(a, b))
        return (y + delta) * rescale.astype(self.dtype)


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


class BottleneckAdapter(nn.Module):
    """Houlsby adapter on a sublayer's output: h + up(act(down(h))). `up` starts at zero (identity)."""

    peft: PeftSpec
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, h):
        size, hidden = self.peft.adapter_size, h.shape[-1]

        def var(name, init, shape, axes):
            return _adapter_variable(self, "adapter", name, lambda: _init(init, *axes)(
                self.make_rng("params"), shape, self.param_dtype))

        down = var("down_kernel", nn.initializers.normal(self.peft.init_std), (hidden, size), ("embed", "adapter"))
        if down is None:  # switched off
            return h
        down_bias = var("down_bias", nn.initializers.zeros, (size,), ("adapter",))
        up = var("up_kernel", nn.initializers.zeros, (size, hidden), ("adapter", "embed"))
        up_bias = var("up_bias", nn.initializers.zeros, (hidden,), ("embed",))
        act = _ADAPTER_ACTIVATIONS[self.peft.adapter_activation]
        z = act(h @ down.astype(self.dtype) + down_bias.astype(self.dtype))
        return h + z @ up.astype(self.dtype) + up_bias.astype(self.dtype)


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
        if self.peft is not None and self.peft.method == "adapter":
            h = BottleneckAdapter(self.peft, cfg.dtype, cfg.param_dtype, name="attn_adapter")(h)
        x = x + checkpoint_name(h, "attn_out")
        h = MLP(cfg, self.peft, name="mlp")(_norm(cfg, "post_attention_layernorm")(x))
        if self.peft is not None and self.peft.method == "adapter":
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

    `peft` (a codejax.peft.PeftSpec) adds a parameter-efficient method whose
    variables live in their own collection; see codejax/peft/spec.py.
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
        prompt = self._soft_prompt(embed) if spec is not None and spec.method == "prompt" else None
        if prompt is not None and not prefill:  # decoding after the soft prompt is in the cache
            positions, prompt = positions + prompt.shape[0], None
        if prompt is not None:
            x, positions, segment_ids = _prepend_prompt(prompt.astype(x.dtype), x, positions, segment_ids)
        prefix_kv = self._prefix_kv() if spec is not None and spec.method == "prefix" else None
        cos, sin = rope_cos_sin(cfg, positions)
        windows = [NO_WINDOW if w is None else w for w in cfg.layer_windows()]

        if cfg.scan_layers:
            scanned = nn.scan(
                _layer_cls(cfg), variable_axes={True: 0}, split_rngs={True: True},
                in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, 0, 0, nn.broadcast, nn.broadcast),
                length=cfg.num_layers, metadata_params={nn.PARTITION_NAME: "layers"})
            (x, cache), _ = scanned(cfg, peft=spec, name="layers")(
                (x, cache), jnp.asarray(windows, jnp.int32), cos, sin, segment_ids, prefix_kv,
                jnp.arange(cfg.num_layers), cache_index, key_mask)
        else:
            layer = _layer_cls(cfg)
            for i, window in enumerate(windows):
                (x, cache), _ = layer(cfg, peft=spec, name=f"layers_{i}")(
                    (x, cache), window, cos, sin, segment_ids, None if prefix_kv is None else prefix_kv[i],
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

    def _soft_prompt(self, embed: nn.Embed):
        """Prompt tuning's [P, embed] soft prompt, or None when switched off."""
        spec = self.peft
        n = spec.num_virtual_tokens

        def init():
            if spec.prompt_init == "random":
                return jax.random.normal(self.make_rng("params"), (n, self.cfg.hidden_size)) * spec.init_std
            if spec.prompt_init == "vocab":  # rows of the (loaded) embedding table
                ids = jax.random.randint(self.make_rng("params"), (n,), 0, self.cfg.vocab_size)
            else:  # text: its token ids, repeated to fill the prompt (as HF PEFT does)
                ids = jnp.asarray((list(spec.prompt_init_ids) * n)[:n])
            return embed.embedding[ids]

        return _adapter_variable(self, "prompt", "embedding", lambda: _init(
            lambda *_: init().astype(self.cfg.param_dtype), "virtual_tokens", "embed")(None))

    def _prefix_kv(self):
        """Prefix tuning's per-layer keys and values [layers, 2, P, kv_heads, head_dim], or None.

        Directly learned, or (prefix_projection) computed from a [P, embed]
        embedding by a tanh MLP, the reparameterisation of Li & Liang (2021).
        The prefixes are used as they are, without RoPE: a learned key can take
        any rotation, and the real tokens keep their positions.
        """
        cfg, spec = self.cfg, self.peft
        n = spec.num_virtual_tokens
        kv_shape = (cfg.num_layers, 2, n, cfg.num_kv_heads, cfg.head_dim)
        kv_axes = ("layers", None, "virtual_tokens", "kv_heads", "head_dim")

        def var(name, init, shape, axes):
            return _adapter_variable(self, "prefix", name, lambda: _init(init, *axes)(
                self.make_rng("params"), shape, cfg.param_dtype))

        if not spec.prefix_projection:
            return var("prefix_kv", nn.initializers.normal(spec.init_std), kv_shape, kv_axes)
        emb = var("embedding", nn.initializers.normal(spec.init_std), (n, cfg.hidden_size),
                  ("virtual_tokens", "embed"))
        if emb is None:
            return None
        hidden, out = spec.prefix_hidden_size, math.prod(kv_shape) // n
        w1 = var("proj_in_kernel", nn.initializers.lecun_normal(), (cfg.hidden_size, hidden), ("embed", "mlp"))
        b1 = var("proj_in_bias", nn.initializers.zeros, (hidden,), ("mlp",))
        w2 = var("proj_out_kernel", nn.initializers.lecun_normal(), (hidden, out), ("mlp", None))
        b2 = var("proj_out_bias", nn.initializers.zeros, (out,), (None,))
        h = jnp.tanh(emb.astype(jnp.float32) @ w1 + b1) @ w2 + b2  # [P, layers*2*kv*hd]
        return jnp.moveaxis(h.reshape((n,) + kv_shape[:2] + kv_shape[3:]), 0, 2)


def _prepend_prompt(prompt, x, positions, segment_ids):
    """Put the soft prompt before every row: positions shift by P; segment -1 is visible to all."""
    batch, n = x.shape[0], prompt.shape[0]
    x = jnp.concatenate([jnp.broadcast_to(prompt[None], (batch,) + prompt.shape), x], axis=1)
    prompt_pos = jnp.broadcast_to(jnp.arange(n, dtype=positions.dtype), (batch, n))
    positions = jnp.concatenate([prompt_pos, positions + n], axis=1)
    segment_ids = jnp.concatenate([jnp.full((batch, n), -1, segment_ids.dtype), segment_ids], axis=1)
    return x, positions, segment_ids
