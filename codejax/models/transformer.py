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


def _init(init_fn, *names: str | None):
    return nn.with_logical_partitioning(init_fn, names)


def _kernel_init():
    # HF initialiser for these families: normal(0, initializer_range=0.02).
    return nn.initializers.normal(0.02)


def attention_mask(segment_ids: jnp.ndarray, window: jnp.ndarray | int = NO_WINDOW) -> jnp.ndarray:
    """Boolean mask [batch, 1, q, k]: causal, within one segment, within the window.

    Segment id 0 marks padding; padded queries attend only to padding, which
    keeps every row non-empty (the diagonal is always allowed) so softmax never
    sees an all-masked row.
    """
    length = segment_ids.shape[-1]
    idx = jnp.arange(length)
    delta = idx[:, None] - idx[None, :]  # q_index - k_index
    allowed = (delta >= 0) & (delta < window)
    same_segment = segment_ids[:, :, None] == segment_ids[:, None, :]
    return (allowed[None] & same_segment)[:, None]


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
    """

    features: tuple[int, ...]
    axes: tuple[str, ...]  # logical names of the kernel dims, inputs first
    use_bias: bool
    dtype: Any
    param_dtype: Any
    n_in: int = 1

    @nn.compact
    def __call__(self, x):
        in_dims = x.shape[x.ndim - self.n_in:]
        kernel = self.param("kernel", _init(_kernel_init(), *self.axes), (*in_dims, *self.features),
                            self.param_dtype)
        contract = (tuple(range(x.ndim - self.n_in, x.ndim)), tuple(range(self.n_in)))
        y = jax.lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype), (contract, ((), ())))
        if self.use_bias:
            bias = self.param("bias", _init(nn.initializers.zeros, *self.axes[self.n_in:]), self.features,
                              self.param_dtype)
            y = y + bias.astype(self.dtype)
        return y


class Attention(nn.Module):
    """Grouped-query self-attention with RoPE, optional q/k norm and sliding window."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x, cos, sin, segment_ids, window):
        cfg = self.cfg
        def dense(features, axes, name):
            return Projection(features, axes, cfg.qkv_bias, cfg.dtype, cfg.param_dtype, name=name)

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
        mask = attention_mask(segment_ids, window)
        # dot_product_attention handles GQA (kv heads broadcast over query groups)
        # and does the softmax in float32.
        out = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=cfg.attention_impl)
        return Projection((cfg.hidden_size,), ("heads", "head_dim", "embed"), cfg.o_bias, cfg.dtype,
                          cfg.param_dtype, n_in=2, name="o_proj")(out)


class MLP(nn.Module):
    """Gated (SwiGLU) MLP, or the plain two-layer GELU MLP of Starcoder2."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        def dense(features, axes, name):
            return Projection((features,), axes, cfg.mlp_bias, cfg.dtype, cfg.param_dtype, name=name)

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
    scanned: bool = False  # under nn.scan the layer must return (carry, per-layer output)

    @nn.compact
    def __call__(self, x, window, cos, sin, segment_ids):
        cfg = self.cfg
        act_axes = ("activation_batch", "activation_length", "activation_embed")
        x = nn.with_logical_constraint(x, act_axes)
        h = Attention(cfg, name="self_attn")(_norm(cfg, "input_layernorm")(x), cos, sin, segment_ids, window)
        x = x + checkpoint_name(h, "attn_out")
        h = MLP(cfg, name="mlp")(_norm(cfg, "post_attention_layernorm")(x))
        x = x + checkpoint_name(h, "mlp_out")
        x = nn.with_logical_constraint(x, act_axes)
        return (x, None) if self.scanned else x


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
    (reward and value heads read them).
    """

    cfg: ModelConfig

    @nn.compact
    def __call__(self, tokens, positions=None, segment_ids=None, *, return_hidden: bool = False):
        cfg = self.cfg
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(tokens.shape[-1]), tokens.shape)
        if segment_ids is None:
            segment_ids = jnp.ones_like(tokens)
        embed = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                         embedding_init=_init(_kernel_init(), "vocab", "embed"), name="embed_tokens")
        x = embed(tokens)
        cos, sin = rope_cos_sin(cfg, positions)
        windows = [NO_WINDOW if w is None else w for w in cfg.layer_windows()]

        if cfg.scan_layers:
            scanned = nn.scan(
                _layer_cls(cfg), variable_axes={True: 0}, split_rngs={True: True},
                in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast), length=cfg.num_layers,
                metadata_params={nn.PARTITION_NAME: "layers"})
            x, _ = scanned(cfg, scanned=True, name="layers")(
                x, jnp.asarray(windows, jnp.int32), cos, sin, segment_ids)
        else:
            layer = _layer_cls(cfg)
            for i, window in enumerate(windows):
                x = layer(cfg, name=f"layers_{i}")(x, window, cos, sin, segment_ids)

        x = _norm(cfg, "norm")(x)
        if return_hidden:
            return x
        if cfg.tie_embeddings:
            logits = embed.attend(x)
        else:
            logits = Projection((cfg.vocab_size,), ("embed", "vocab"), False, cfg.dtype, cfg.param_dtype,
                                name="lm_head")(x)
        logits = nn.with_logical_constraint(
            logits, ("activation_batch", "activation_length", "activation_vocab"))
        return logits.astype(jnp.float32)
