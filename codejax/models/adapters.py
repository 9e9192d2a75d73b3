"""Parameter-efficient methods inside the model: `PeftSpec`, where each method acts, and its layers.

`PeftSpec` is a `Transformer` attribute: one frozen (hashable) dataclass that says
which projections grow adapters and where prefixes, soft prompts or bottleneck
adapters go. Each method keeps its trainable variables in its own Flax collection
next to the frozen base in 'params':

    method   collection  variables
    lora     lora        lora_a [*in, r], lora_b [r, *out]       (per targeted projection)
    qlora    lora        as lora; the base kernels are stored as NF4 (see nf4.py)
    dora     lora        as lora, plus lora_magnitude [*out]
    prefix   prefix      prefix_kv [layers, 2, P, kv_heads, head_dim], or an embedding + MLP
    prompt   prompt      embedding [P, embed]
    adapter  adapter     attn_adapter / mlp_adapter: down, up (+ biases) per layer
    ia3      ia3         ia3_scale [*out], or [*in] on feed-forward modules

Applying the model with the collection switches the method on; leaving the
collection out gives the base model (the DPO reference, with no second copy).

`LAYOUTS` has one row per method saying where in the model it acts; the model
code reads those switches and never compares method names. What a method means
outside the model (merging, the HF PEFT format) is in codejax/peft/methods.py.
The `PeftSpec` fields are also the `config.peft` section (codejax/config.py
generates it from them), so a field added here is a config field too.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a method acts inside the model; every switch is off for full fine-tuning."""

    collection: str | None  # the Flax collection of its trainable variables
    low_rank: bool = False  # a low-rank update on the targeted projections (LoRA)
    magnitude: bool = False  # ... renormalised to learned column magnitudes (DoRA)
    nf4_base: bool = False  # the base projections are stored as NF4 (QLoRA)
    scales: bool = False  # learned scales on projection inputs or outputs ((IA)3)
    bottleneck: bool = False  # Houlsby adapters after attention and after the MLP
    soft_prompt: bool = False  # trainable embeddings before the tokens (prompt tuning)
    prefix: bool = False  # trainable keys and values in every layer (prefix tuning)

    @property
    def virtual_tokens(self) -> bool:
        return self.soft_prompt or self.prefix


LAYOUTS: dict[str, Layout] = {
    "none": Layout(None),
    "lora": Layout("lora", low_rank=True),
    "qlora": Layout("lora", low_rank=True, nf4_base=True),
    "dora": Layout("lora", low_rank=True, magnitude=True),
    "prefix": Layout("prefix", prefix=True),
    "prompt": Layout("prompt", soft_prompt=True),
    "adapter": Layout("adapter", bottleneck=True),
    "ia3": Layout("ia3", scales=True),
}
METHODS = tuple(LAYOUTS)
PROMPT_INITS = ("random", "vocab", "text")
ADAPTER_ACTIVATIONS = {"gelu": lambda x: jax.nn.gelu(x, approximate=False), "relu": nn.relu, "silu": nn.silu,
                       "tanh": jnp.tanh}

# Every projection a decoder layer can have, and the shortcut that selects them all (as in HF PEFT,
# 'all-linear' leaves out the output head).
LAYER_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                     "c_fc", "c_proj")
ALL_LINEAR = "all-linear"
# Modules whose *input* (IA)3 scales: the feed-forward output projections, as in the (IA)3 paper.
FEEDFORWARD_OUT = ("down_proj", "c_proj")


@dataclasses.dataclass(frozen=True)
class PeftSpec:
    method: str = "none"  # a LAYOUTS name: none | lora | qlora | dora | prefix | prompt | adapter | ia3
    # LoRA / QLoRA / DoRA
    rank: int = 8
    alpha: float = 16.0
    rslora: bool = False  # scale alpha / sqrt(rank) instead of alpha / rank
    dropout: float = 0.0  # on the adapter's input; active when the apply call gets a 'dropout' rng
    # Module names (q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,c_fc,c_proj,lm_head),
    # 'all-linear', or one regex (prefixed 're:') on the dotted module path, e.g. 're:.*self_attn\.(q|v)_proj'.
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    # Prefix and prompt tuning
    num_virtual_tokens: int = 20
    prefix_projection: bool = False  # reparameterise prefixes through an MLP (Li & Liang)
    prefix_hidden_size: int = 512
    prompt_init: str = "random"  # random | vocab (random vocabulary rows) | text (prompt_init_ids)
    # Token ids of the text a soft prompt starts from (config: peft.prompt_init_text, tokenized).
    prompt_init_ids: tuple[int, ...] = dataclasses.field(default=(), metadata={"config": False})
    init_std: float = 0.02  # normal init of prefixes and random soft prompts
    # Adapter layers (Houlsby)
    adapter_size: int = 64
    adapter_activation: str = "gelu"  # gelu | relu | silu | tanh
    # (IA)3: output scaling on targets, input scaling on feed-forward modules
    ia3_target_modules: tuple[str, ...] = ("k_proj", "v_proj", "down_proj", "c_proj")
    ia3_feedforward_modules: tuple[str, ...] = FEEDFORWARD_OUT

    def __post_init__(self):
        if self.method not in LAYOUTS:
            raise ValueError(f"peft.method={self.method!r}; expected one of {METHODS}")
        if self.rank < 1:
            raise ValueError(f"peft.rank={self.rank}; must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"peft.dropout={self.dropout}; must be in [0, 1)")
        if self.layout.virtual_tokens and self.num_virtual_tokens < 1:
            raise ValueError(f"peft.num_virtual_tokens={self.num_virtual_tokens}; must be >= 1")
        if self.prompt_init not in PROMPT_INITS:
            raise ValueError(f"peft.prompt_init={self.prompt_init!r}; expected one of {PROMPT_INITS}")
        if self.layout.soft_prompt and self.prompt_init == "text" and not self.prompt_init_ids:
            raise ValueError("peft.prompt_init='text' needs peft.prompt_init_text (tokenized into prompt_init_ids)")
        if self.adapter_activation not in ADAPTER_ACTIVATIONS:
            raise ValueError(f"peft.adapter_activation={self.adapter_activation!r}; "
                             f"expected one of {sorted(ADAPTER_ACTIVATIONS)}")
        for field in ("target_modules", "ia3_target_modules", "ia3_feedforward_modules"):
            for pattern in getattr(self, field):
                _check_module_pattern(f"peft.{field}", pattern)

    @property
    def layout(self) -> Layout:
        return LAYOUTS[self.method]

    @property
    def collection(self) -> str | None:
        """The Flax collection holding this method's trainable variables (None for 'none')."""
        return self.layout.collection

    @property
    def enabled(self) -> bool:
        """False for full fine-tuning (method 'none')."""
        return self.collection is not None

    @property
    def scale(self) -> float:
        return self.alpha / (self.rank ** 0.5 if self.rslora else self.rank)

    def targets(self, name: str, path: tuple[str, ...]) -> bool:
        """Does the low-rank update (LoRA/DoRA) adapt the projection `name` at module path `path`?"""
        return self.layout.low_rank and _matches(self.target_modules, name, path)

    def ia3_mode(self, name: str, path: tuple[str, ...]) -> str | None:
        """'in' or 'out' when (IA)3 scales this projection's input or output, else None."""
        if not self.layout.scales or not _matches(self.ia3_target_modules, name, path):
            return None
        return "in" if _matches(self.ia3_feedforward_modules, name, path) else "out"


MODULE_NAMES = LAYER_PROJECTIONS + ("lm_head",)


def _check_module_pattern(field: str, pattern: str) -> None:
    """A typo in a module name would otherwise adapt nothing (or fewer modules than meant)."""
    if pattern.startswith("re:"):
        try:
            re.compile(pattern[3:])
        except re.error as e:
            raise ValueError(f"{field} regex {pattern[3:]!r}: {e}") from None
    elif pattern != ALL_LINEAR and pattern not in MODULE_NAMES:
        close = difflib.get_close_matches(pattern, MODULE_NAMES + (ALL_LINEAR,), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"{field}: unknown module {pattern!r}; {hint}names are {', '.join(MODULE_NAMES)}, "
                         f"{ALL_LINEAR!r} or a 're:' regex on the module path")


def _matches(patterns: tuple[str, ...], name: str, path: tuple[str, ...]) -> bool:
    dotted = ".".join(path)
    for pattern in patterns:
        if pattern == ALL_LINEAR:
            if name in LAYER_PROJECTIONS:
                return True
        elif pattern.startswith("re:"):
            if re.fullmatch(pattern[3:], dotted):
                return True
        elif pattern == name:
            return True
    return False


def split_names(value: str) -> tuple[str, ...]:
    """'q_proj, v_proj' -> ('q_proj', 'v_proj'); a 're:' regex stays whole (it may contain commas)."""
    value = value.strip()
    if value.startswith("re:"):
        return (value,)
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _config_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(PeftSpec) if f.metadata.get("config", True)]


def config_fields() -> dict[str, Any]:
    """The `config.peft` fields PeftSpec defines, with their defaults (tuples as comma-separated strings)."""
    return {f.name: ",".join(f.default) if isinstance(f.default, tuple) else f.default for f in _config_fields()}


def spec_from_config(pc, tokenizer=None) -> PeftSpec:
    """`config.peft` -> PeftSpec; the tokenizer turns prompt_init_text into ids."""
    ids: tuple[int, ...] = ()
    if LAYOUTS.get(pc.method, LAYOUTS["none"]).soft_prompt and pc.prompt_init == "text":
        if not pc.prompt_init_text:
            raise ValueError("peft.prompt_init='text' needs peft.prompt_init_text")
        if tokenizer is None:
            raise ValueError("peft.prompt_init='text' needs a tokenizer")
        ids = tuple(tokenizer(pc.prompt_init_text, add_special_tokens=False)["input_ids"])
    values = {f.name: split_names(pc[f.name]) if isinstance(f.default, tuple) else pc[f.name]
              for f in _config_fields()}
    return PeftSpec(**values, prompt_init_ids=ids)


# ----------------------------------------------------------------------------- in-model layers

def with_axes(init_fn, *names: str | None):
    """An initialiser whose variable carries logical axis names (for sharding)."""
    return nn.with_logical_partitioning(init_fn, names)


_init = with_axes


def adapter_variable(module: nn.Module, collection: str, name: str, init_fn):
    """A PEFT variable's value, or None when the method is switched off.

    The variable exists when the caller passes its collection to `apply` (or
    lets it be created: `init`, or `apply(..., mutable=[collection])`, where
    `init_fn()` runs and may read the base weights). Without the collection the
    module computes the base model.
    """
    if not (module.has_variable(collection, name) or module.is_mutable_collection(collection)):
        return None
    return module.variable(collection, name, init_fn).value


def contract(x, w, n: int):
    """Contract the last `n` dims of x with the first `n` dims of w."""
    return jax.lax.dot_general(x, w, ((tuple(range(x.ndim - n, x.ndim)), tuple(range(n))), ((), ())))


def ia3_scale(module: nn.Module, spec: PeftSpec, mode: str, in_dims, features, in_axes, out_axes):
    """(IA)3's learned scale of a projection's input ('in') or output ('out'); None when off. Starts at one."""
    dims, axes = (in_dims, in_axes) if mode == "in" else (features, out_axes)
    return adapter_variable(module, "ia3", "ia3_scale", lambda: _init(nn.initializers.ones, *axes)(
        None, dims, module.param_dtype))


def adapted_projection(module: nn.Module, spec: PeftSpec | None, x, kernel, shape, in_axes, out_axes, bias):
    """A projection's output with its PEFT method applied: ((x * s_in) W + delta + b) * s_out.

    Called from `Projection.__call__` (a compact method: `module` is that projection), so every
    method that acts on projections lives here and the model file never names one. `bias` creates
    and returns the projection's bias parameter, or is None when it has none.
    """
    n_in = len(in_axes)
    path = tuple(module.scope.path)
    scale_mode = spec.ia3_mode(module.name, path) if spec else None
    scale = scale_mode and ia3_scale(module, spec, scale_mode, shape[:n_in], shape[n_in:], in_axes, out_axes)
    if scale_mode == "in" and scale is not None:
        x = x * scale.astype(module.dtype)
    y = contract(x, kernel.astype(module.dtype), n_in)
    if spec is not None and spec.targets(module.name, path):
        y = low_rank_update(module, spec, x, y, kernel, shape, in_axes, out_axes)
    if bias is not None:
        y = y + bias().astype(module.dtype)
    if scale_mode == "out" and scale is not None:
        y = y * scale.astype(module.dtype)
    return y


def low_rank_update(module: nn.Module, spec: PeftSpec, x, y, kernel, shape, in_axes, out_axes):
    """y + scale * B(A(dropout(x))); DoRA rescales each output column to a learned magnitude.

    Called inside a projection's compact `__call__`: `module` is that projection.
    """
    n_in = len(in_axes)
    in_dims, features = shape[:n_in], shape[n_in:]
    fan_in = math.prod(in_dims)

    def init_a(rng, a_shape, dtype):  # kaiming-uniform(a=sqrt(5)), as torch Linear and HF PEFT
        bound = 1.0 / math.sqrt(fan_in)
        return jax.random.uniform(rng, a_shape, dtype, -bound, bound)

    a = adapter_variable(module, "lora", "lora_a", lambda: _init(init_a, *in_axes, "lora_rank")(
        module.make_rng("params"), (*in_dims, spec.rank), module.param_dtype))
    if a is None:  # adapters switched off
        return y
    b = adapter_variable(module, "lora", "lora_b", lambda: _init(nn.initializers.zeros, "lora_rank", *out_axes)(
        None, (spec.rank, *features), module.param_dtype))
    if spec.dropout and module.has_rng("dropout"):
        x = nn.Dropout(spec.dropout)(x, deterministic=False)
    delta = contract(contract(x, a.astype(module.dtype), n_in), b.astype(module.dtype), 1) * spec.scale
    if not spec.layout.magnitude:
        return y + delta

    def column_norm(a, b):
        w = kernel.astype(jnp.float32) + spec.scale * contract(a.astype(jnp.float32), b.astype(jnp.float32), 1)
        return jnp.sqrt(jnp.sum(jnp.square(w), axis=tuple(range(n_in))))

    magnitude = adapter_variable(module, "lora", "lora_magnitude", lambda: _init(
        lambda *_: column_norm(a, b).astype(module.param_dtype), *out_axes)(None))
    # The norm is treated as a constant in the backward pass (DoRA paper, section 4.3), as in HF PEFT.
    rescale = magnitude.astype(jnp.float32) / jax.lax.stop_gradient(column_norm(a, b))
    return (y + delta) * rescale.astype(module.dtype)


class BottleneckAdapter(nn.Module):
    """Houlsby adapter on a sublayer's output: h + up(act(down(h))). `up` starts at zero (identity)."""

    peft: PeftSpec
    dtype: Any
    param_dtype: Any

    @nn.compact
    def __call__(self, h):
        size, hidden = self.peft.adapter_size, h.shape[-1]

        def var(name, init, shape, axes):
            return adapter_variable(self, "adapter", name, lambda: _init(init, *axes)(
                self.make_rng("params"), shape, self.param_dtype))

        down = var("down_kernel", nn.initializers.normal(self.peft.init_std), (hidden, size), ("embed", "adapter"))
        if down is None:  # switched off
            return h
        down_bias = var("down_bias", nn.initializers.zeros, (size,), ("adapter",))
        up = var("up_kernel", nn.initializers.zeros, (size, hidden), ("adapter", "embed"))
        up_bias = var("up_bias", nn.initializers.zeros, (hidden,), ("embed",))
        act = ADAPTER_ACTIVATIONS[self.peft.adapter_activation]
        z = act(h @ down.astype(self.dtype) + down_bias.astype(self.dtype))
        return h + z @ up.astype(self.dtype) + up_bias.astype(self.dtype)


def soft_prompt(module: nn.Module, spec: PeftSpec, cfg, embed: nn.Embed):
    """Prompt tuning's [P, embed] soft prompt, or None when switched off (called in the model's `__call__`)."""
    n = spec.num_virtual_tokens

    def init():
        if spec.prompt_init == "random":
            return jax.random.normal(module.make_rng("params"), (n, cfg.hidden_size)) * spec.init_std
        if spec.prompt_init == "vocab":  # rows of the (loaded) embedding table
            ids = jax.random.randint(module.make_rng("params"), (n,), 0, cfg.vocab_size)
        else:  # text: its token ids, repeated to fill the prompt (as HF PEFT does)
            ids = jnp.asarray((list(spec.prompt_init_ids) * n)[:n])
        return embed.embedding[ids]

    return adapter_variable(module, "prompt", "embedding", lambda: _init(
        lambda *_: init().astype(cfg.param_dtype), "virtual_tokens", "embed")(None))


def prepend_prompt(prompt, x, positions, segment_ids):
    """Put the soft prompt before every row: positions shift by P; segment -1 is visible to all."""
    batch, n = x.shape[0], prompt.shape[0]
    x = jnp.concatenate([jnp.broadcast_to(prompt[None], (batch,) + prompt.shape), x], axis=1)
    prompt_pos = jnp.broadcast_to(jnp.arange(n, dtype=positions.dtype), (batch, n))
    positions = jnp.concatenate([prompt_pos, positions + n], axis=1)
    segment_ids = jnp.concatenate([jnp.full((batch, n), -1, segment_ids.dtype), segment_ids], axis=1)
    return x, positions, segment_ids


def prefix_kv(module: nn.Module, spec: PeftSpec, cfg):
    """Prefix tuning's per-layer keys and values [layers, 2, P, kv_heads, head_dim], or None.

    Directly learned, or (prefix_projection) computed from a [P, embed]
    embedding by a tanh MLP, the reparameterisation of Li & Liang (2021).
    The prefixes are used as they are, without RoPE: a learned key can take
    any rotation, and the real tokens keep their positions.
    """
    n = spec.num_virtual_tokens
    kv_shape = (cfg.num_layers, 2, n, cfg.num_kv_heads, cfg.head_dim)
    kv_axes = ("layers", None, "virtual_tokens", "kv_heads", "head_dim")

    def var(name, init, shape, axes):
        return adapter_variable(module, "prefix", name, lambda: _init(init, *axes)(
            module.make_rng("params"), shape, cfg.param_dtype))

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
