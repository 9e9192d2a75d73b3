"""Model configuration: one frozen dataclass describes every supported family.

The families code LLMs use differ in a handful of switches (norm type, MLP
type, which projections carry biases, q/k norm, tied embeddings, sliding
window, RoPE scaling), so one config with those switches covers Llama 2/3/3.1,
CodeLlama, DeepSeek-Coder, Mistral, Qwen2 / Qwen2.5-Coder, Qwen3 and
Starcoder2 with a single transformer implementation. `family` only decides the
Hugging Face names and architecture string when we write a checkpoint back.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "starcoder2")
REMAT_POLICIES = ("none", "full", "dots", "dots_with_no_batch_dims", "minimal")
ROPE_TYPES = ("default", "linear", "llama3", "yarn")
ACTIVATIONS = ("silu", "gelu", "gelu_tanh")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of a decoder-only transformer.

    Frozen (hashable) so it can be a Flax module attribute and a jit static arg.
    `rope_scaling` is a tuple of (key, value) pairs for the same reason; use
    `rope_scaling_dict` to read it.
    """

    family: str = "llama"
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_layers: int = 32
    num_heads: int = 32
    num_kv_heads: int = 32
    head_dim: int | None = None  # None: hidden_size // num_heads, filled in at construction
    max_position_embeddings: int = 4096

    norm: str = "rms"  # "rms" (RMSNorm) or "layer" (LayerNorm with bias)
    norm_eps: float = 1e-6
    mlp: str = "glu"  # "glu": down(act(gate(x)) * up(x)); "plain": c_proj(act(c_fc(x)))
    activation: str = "silu"
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False  # Qwen3: RMSNorm over head_dim on q and k before RoPE
    tie_embeddings: bool = False

    rope_theta: float = 10000.0
    rope_scaling: tuple[tuple[str, Any], ...] | None = None
    # Sliding-window attention: a query sees itself and the window-1 keys before it.
    sliding_window: int | None = None
    # Which layers use the window (Qwen2/3 `layer_types`); None means all of them.
    sliding_window_layers: tuple[bool, ...] | None = None

    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None

    # Numerics and memory switches.
    dtype: str = "float32"  # compute dtype of activations and matmuls
    param_dtype: str = "float32"  # storage dtype of the weights
    scan_layers: bool = True
    remat_policy: str = "none"
    attention_impl: str | None = None  # passed to jax.nn.dot_product_attention

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"ModelConfig.family={self.family!r}; expected one of {FAMILIES}")
        if self.norm not in ("rms", "layer"):
            raise ValueError(f"ModelConfig.norm={self.norm!r}; expected 'rms' or 'layer'")
        if self.mlp not in ("glu", "plain"):
            raise ValueError(f"ModelConfig.mlp={self.mlp!r}; expected 'glu' or 'plain'")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"ModelConfig.activation={self.activation!r}; expected one of {ACTIVATIONS}")
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(
                f"ModelConfig.remat_policy={self.remat_policy!r}; expected one of {REMAT_POLICIES}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"ModelConfig.num_heads={self.num_heads} is not a multiple of "
                f"num_kv_heads={self.num_kv_heads} (grouped-query attention needs it)")
        if self.head_dim is None:
            if self.hidden_size % self.num_heads:
                raise ValueError(
                    f"ModelConfig.hidden_size={self.hidden_size} is not divisible by num_heads="
                    f"{self.num_heads}; set head_dim explicitly")
            # Normalise so equal models compare equal whether head_dim was given or derived.
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_heads)
        if self.sliding_window_layers is not None and len(self.sliding_window_layers) != self.num_layers:
            raise ValueError(
                f"ModelConfig.sliding_window_layers has {len(self.sliding_window_layers)} entries "
                f"for num_layers={self.num_layers}")
        rope_type = self.rope_scaling_dict.get("rope_type", "default")
        if rope_type not in ROPE_TYPES:
            raise ValueError(
                f"ModelConfig.rope_scaling rope_type={rope_type!r} is not supported; "
                f"supported: {ROPE_TYPES}")

    @property
    def rope_scaling_dict(self) -> dict[str, Any]:
        return dict(self.rope_scaling or ())

    def layer_windows(self) -> list[int | None]:
        """Per-layer sliding window (None = full causal attention)."""
        if self.sliding_window is None:
            return [None] * self.num_layers
        use = self.sliding_window_layers or (True,) * self.num_layers
        return [self.sliding_window if u else None for u in use]

    def replace(self, **changes) -> "ModelConfig":
        if isinstance(changes.get("rope_scaling"), Mapping):
            changes["rope_scaling"] = freeze_rope_scaling(changes["rope_scaling"])
        return dataclasses.replace(self, **changes)


def freeze_rope_scaling(rope: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...] | None:
    """Turn a rope-scaling dict into the hashable form ModelConfig stores."""
    if not rope:
        return None
    items = []
    for k, v in sorted(rope.items()):
        if isinstance(v, list):
            v = tuple(v)
        items.append((k, v))
    return tuple(items)


# Family defaults: the switches each family fixes. Sizes come from the caller.
_FAMILY_SWITCHES: dict[str, dict[str, Any]] = {
    "llama": dict(norm="rms", mlp="glu", activation="silu"),
    "mistral": dict(norm="rms", mlp="glu", activation="silu"),
    "qwen2": dict(norm="rms", mlp="glu", activation="silu", qkv_bias=True),
    "qwen3": dict(norm="rms", mlp="glu", activation="silu", qk_norm=True),
    "starcoder2": dict(norm="layer", mlp="plain", activation="gelu_tanh", qkv_bias=True,
                       o_bias=True, mlp_bias=True, tie_embeddings=True, norm_eps=1e-5),
}


def family_config(family: str, **kwargs) -> ModelConfig:
    """A ModelConfig with the family's fixed switches and the given sizes."""
    if family not in _FAMILY_SWITCHES:
        raise ValueError(f"unknown model family {family!r}; expected one of {FAMILIES}")
    fields = {**_FAMILY_SWITCHES[family], **kwargs}
    if isinstance(fields.get("rope_scaling"), Mapping):
        fields["rope_scaling"] = freeze_rope_scaling(fields["rope_scaling"])
    return ModelConfig(family=family, **fields)


def tiny_config(family: str = "llama", **kwargs) -> ModelConfig:
    """A model small enough for CPU tests and Colab demos (well under 1M params)."""
    sizes = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2,
                 num_heads=4, num_kv_heads=2, max_position_embeddings=512)
    if family == "qwen3":
        sizes["head_dim"] = 32  # Qwen3 decouples head_dim from hidden_size / num_heads
    return family_config(family, **{**sizes, **kwargs})


# Published shapes of real checkpoints, so parameter/FLOP counts and benchmarks
# can use them without any weights. Numbers come from each model's config.json.
PRESETS: dict[str, dict[str, Any]] = {
    "llama2-7b": dict(family="llama", vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                      num_layers=32, num_heads=32, num_kv_heads=32, norm_eps=1e-5,
                      max_position_embeddings=4096),
    "codellama-7b": dict(family="llama", vocab_size=32016, hidden_size=4096, intermediate_size=11008,
                         num_layers=32, num_heads=32, num_kv_heads=32, norm_eps=1e-5,
                         rope_theta=1e6, max_position_embeddings=16384),
    "llama3-8b": dict(family="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                      num_layers=32, num_heads=32, num_kv_heads=8, norm_eps=1e-5,
                      rope_theta=500000.0, max_position_embeddings=8192),
    "llama3.1-8b": dict(family="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                        num_layers=32, num_heads=32, num_kv_heads=8, norm_eps=1e-5,
                        rope_theta=500000.0, max_position_embeddings=131072,
                        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                          high_freq_factor=4.0,
                                          original_max_position_embeddings=8192)),
    "llama3.2-1b": dict(family="llama", vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                        num_layers=16, num_heads=32, num_kv_heads=8, head_dim=64, norm_eps=1e-5,
                        rope_theta=500000.0, tie_embeddings=True, max_position_embeddings=131072,
                        rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0,
                                          high_freq_factor=4.0,
                                          original_max_position_embeddings=8192)),
    "deepseek-coder-1.3b": dict(family="llama", vocab_size=32256, hidden_size=2048,
                                intermediate_size=5504, num_layers=24, num_heads=16,
                                num_kv_heads=16, rope_theta=100000.0,
                                rope_scaling=dict(rope_type="linear", factor=4.0),
                                max_position_embeddings=16384),
    "qwen2.5-coder-1.5b": dict(family="qwen2", vocab_size=151936, hidden_size=1536,
                               intermediate_size=8960, num_layers=28, num_heads=12, num_kv_heads=2,
                               tie_embeddings=True, rope_theta=1e6, max_position_embeddings=32768),
    "qwen2.5-coder-7b": dict(family="qwen2", vocab_size=152064, hidden_size=3584,
                             intermediate_size=18944, num_layers=28, num_heads=28, num_kv_heads=4,
                             rope_theta=1e6, max_position_embeddings=32768),
    "qwen3-1.7b": dict(family="qwen3", vocab_size=151936, hidden_size=2048, intermediate_size=6144,
                       num_layers=28, num_heads=16, num_kv_heads=8, head_dim=128,
                       tie_embeddings=True, rope_theta=1e6, max_position_embeddings=40960),
    "starcoder2-3b": dict(family="starcoder2", vocab_size=49152, hidden_size=3072,
                          intermediate_size=12288, num_layers=30, num_heads=24, num_kv_heads=2,
                          rope_theta=999999.4420358813, sliding_window=4096,
                          max_position_embeddings=16384),
    # Llama-shaped ~1B model used by the MFU benchmark (random init).
    "llama-1b": dict(family="llama", vocab_size=32000, hidden_size=2048, intermediate_size=5632,
                     num_layers=22, num_heads=32, num_kv_heads=4, norm_eps=1e-5,
                     max_position_embeddings=4096),
}


def preset_config(name: str, **overrides) -> ModelConfig:
    """A ModelConfig with a published model's shape (no weights involved)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known presets: {sorted(PRESETS)}")
    fields = {**PRESETS[name], **overrides}
    return family_config(fields.pop("family"), **fields)
