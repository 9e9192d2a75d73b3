"""Hugging Face interop: read and write local `transformers` model directories.

    from codejax.models import load_hf
    model, params = load_hf("/path/to/hf_model_dir")
    logits = model.apply({"params": params}, tokens)

A directory holds config.json and either model.safetensors or sharded
model-*.safetensors with model.safetensors.index.json. Tensors are read and
converted one at a time (see safetensors_io), so loading never needs two copies
of the checkpoint in host memory.

Name mapping is mechanical because the Flax modules carry the HF module names:
    flax  ("layers_3" | "layers"[3], "self_attn", "q_proj", "kernel")
    HF    "model.layers.3.self_attn.q_proj.weight"
HF stores a linear weight as [out, in]; Flax kernels are [in..., out...] with
heads split out, e.g. q_proj [embed, heads, head_dim] and o_proj
[heads, head_dim, embed]. Converting is a transpose plus a reshape.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from codejax.models.config import ModelConfig, family_config, freeze_rope_scaling
from codejax.models.params import Params, abstract_params, strip_collection
from codejax.models.safetensors_io import CheckpointReader, TensorSpec, write_checkpoint
from codejax.models.transformer import Transformer

log = logging.getLogger(__name__)

ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Starcoder2ForCausalLM": "starcoder2",
}
_FAMILY_ARCH = {family: arch for arch, family in ARCHITECTURES.items()}

_HF_ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh",
                   "gelu_new": "gelu_tanh", "gelu_fast": "gelu_tanh"}
_ACTIVATION_TO_HF = {"silu": "silu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}

# Kernels whose input side spans two Flax axes (heads, head_dim); every other kernel has one.
_KERNEL_IN_DIMS = {"o_proj": 2}
_LEAF_TO_HF = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}
_LAYER_RE = re.compile(r"layers_(\d+)$")


# ----------------------------------------------------------------------------- configs

def _family_of(hf: dict[str, Any], source: str) -> str:
    archs = hf.get("architectures") or []
    for arch in archs:
        if arch in ARCHITECTURES:
            return ARCHITECTURES[arch]
    model_type = hf.get("model_type")
    if not archs and model_type in _FAMILY_ARCH:
        return model_type
    raise ValueError(
        f"{source}: unsupported architecture {archs or model_type!r}; codejax supports "
        f"{sorted(ARCHITECTURES)}")


def _rope_from_hf(hf: dict[str, Any], source: str) -> tuple[float, tuple | None]:
    """rope_theta and scaling from either the transformers<5 or >=5 config layout."""
    params = dict(hf.get("rope_parameters") or {})
    if params and all(isinstance(v, dict) for v in params.values()):
        raise ValueError(f"{source}: per-layer-type rope_parameters are not supported")
    theta = params.pop("rope_theta", None) or hf.get("rope_theta", 10000.0)
    scaling = dict(hf.get("rope_scaling") or params)
    scaling.pop("rope_theta", None)
    rope_type = scaling.pop("type", None) or scaling.get("rope_type", "default")
    if scaling.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)) != 1.0:
        raise ValueError(f"{source}: partial_rotary_factor != 1 is not supported")
    scaling.pop("partial_rotary_factor", None)
    if rope_type == "default":
        return float(theta), None
    scaling["rope_type"] = rope_type
    if rope_type in ("llama3", "yarn"):
        scaling.setdefault("original_max_position_embeddings", hf.get("max_position_embeddings"))
    return float(theta), freeze_rope_scaling(scaling)


def _sliding_layers(hf: dict[str, Any], family: str) -> tuple[int | None, tuple[bool, ...] | None]:
    window = hf.get("sliding_window")
    if family in ("llama",) or window is None:
        return None, None
    if family in ("qwen2", "qwen3"):
        if not hf.get("use_sliding_window", False):
            return None, None
        layer_types = hf.get("layer_types")
        n = hf["num_hidden_layers"]
        if layer_types is None:
            first = hf.get("max_window_layers", n)
            layer_types = ["sliding_attention" if i >= first else "full_attention" for i in range(n)]
        return int(window), tuple(t == "sliding_attention" for t in layer_types)
    return int(window), None


def config_from_hf(hf: dict[str, Any], source: str = "config.json", **overrides) -> ModelConfig:
    """ModelConfig from a transformers config.json dict; `overrides` set codejax-only fields."""
    family = _family_of(hf, source)
    try:
        act = _HF_ACTIVATIONS[hf.get("hidden_act", "silu")]
    except KeyError:
        raise ValueError(f"{source}: unsupported hidden_act {hf.get('hidden_act')!r}") from None
    theta, scaling = _rope_from_hf(hf, source)
    window, window_layers = _sliding_layers(hf, family)
    fields: dict[str, Any] = dict(
        vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"], num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        num_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
        head_dim=hf.get("head_dim"), max_position_embeddings=hf.get("max_position_embeddings", 4096),
        activation=act, rope_theta=theta, rope_scaling=scaling, sliding_window=window,
        sliding_window_layers=window_layers, bos_token_id=hf.get("bos_token_id"),
        eos_token_id=tuple(e) if isinstance(e := hf.get("eos_token_id"), list) else e,
        pad_token_id=hf.get("pad_token_id"),
    )
    if "tie_word_embeddings" in hf:
        fields["tie_embeddings"] = bool(hf["tie_word_embeddings"])
    if family == "starcoder2":
        bias = hf.get("use_bias", True)
        fields.update(qkv_bias=bias, o_bias=bias, mlp_bias=bias, norm_eps=hf.get("norm_epsilon", 1e-5))
    else:
        fields["norm_eps"] = hf.get("rms_norm_eps", 1e-6)
        if family == "qwen2":
            fields.update(qkv_bias=True, o_bias=False)
        else:
            attn_bias = bool(hf.get("attention_bias", False))
            fields.update(qkv_bias=attn_bias, o_bias=attn_bias, mlp_bias=bool(hf.get("mlp_bias", False)))
    try:
        return family_config(family, **{**fields, **overrides})
    except TypeError as e:  # an unknown override name
        raise ValueError(f"{source}: {e}") from None


def config_to_hf(cfg: ModelConfig, dtype: str | None = None) -> dict[str, Any]:
    """A transformers config.json dict for `cfg` (rope written in the layout every version reads)."""
    hf: dict[str, Any] = dict(
        architectures=[_FAMILY_ARCH[cfg.family]], model_type=cfg.family,
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        head_dim=cfg.head_dim, max_position_embeddings=cfg.max_position_embeddings,
        hidden_act=_ACTIVATION_TO_HF[cfg.activation], rope_theta=cfg.rope_theta,
        rope_scaling=cfg.rope_scaling_dict or None, tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id,
        initializer_range=0.02, use_cache=True, attention_dropout=0.0,
        torch_dtype=dtype or cfg.param_dtype,
    )
    if isinstance(cfg.eos_token_id, tuple):
        hf["eos_token_id"] = list(cfg.eos_token_id)
    if cfg.family == "starcoder2":
        if not (cfg.qkv_bias == cfg.o_bias == cfg.mlp_bias):
            raise ValueError("starcoder2 checkpoints use one use_bias flag for all projections")
        hf.update(norm_epsilon=cfg.norm_eps, use_bias=cfg.qkv_bias, sliding_window=cfg.sliding_window,
                  residual_dropout=0.0, embedding_dropout=0.0)
        return hf
    hf["rms_norm_eps"] = cfg.norm_eps
    if cfg.family in ("llama", "mistral", "qwen3"):
        hf.update(attention_bias=cfg.qkv_bias, mlp_bias=cfg.mlp_bias)
    if cfg.family == "mistral":
        hf["sliding_window"] = cfg.sliding_window
    if cfg.family in ("qwen2", "qwen3"):
        windows = cfg.layer_windows()
        hf.update(use_sliding_window=cfg.sliding_window is not None, sliding_window=cfg.sliding_window,
                  max_window_layers=cfg.num_layers,
                  layer_types=["full_attention" if w is None else "sliding_attention" for w in windows])
    return hf


def read_hf_config(path: str | os.PathLike, **overrides) -> ModelConfig:
    """ModelConfig from the config.json in a local HF model directory."""
    config_path = os.path.join(os.fspath(path), "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{path}: no config.json; expected a local Hugging Face model directory")
    with open(config_path, encoding="utf-8") as f:
        try:
            hf = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{config_path}: line {e.lineno}: invalid JSON: {e.msg}") from None
    return config_from_hf(hf, source=config_path, **overrides)


# ----------------------------------------------------------------------------- weights

def _hf_key(path: tuple[str, ...], layer: int | None) -> str:
    *modules, leaf = path
    name = ".".join(modules + [_LEAF_TO_HF[leaf]])
    if modules[0] == "lm_head":
        return name
    if layer is not None:
        name = ".".join([f"layers.{layer}"] + modules[1:] + [_LEAF_TO_HF[leaf]])
    return "model." + name


def _hf_shape(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape HF stores for a Flax leaf of `shape` (one layer's slice)."""
    if path[-1] != "kernel":
        return (math.prod(shape),) if len(shape) > 1 and path[-1] == "bias" else tuple(shape)
    n_in = _KERNEL_IN_DIMS.get(path[-2], 1)
    return (math.prod(shape[n_in:]), math.prod(shape[:n_in]))


def _to_flax(path: tuple[str, ...], tensor: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if path[-1] == "kernel":
        tensor = tensor.T
    return tensor.reshape(shape)


def _to_hf(path: tuple[str, ...], array: np.ndarray) -> np.ndarray:
    hf_shape = _hf_shape(path, array.shape)
    if path[-1] == "kernel":
        return np.ascontiguousarray(array.reshape(hf_shape[::-1]).T)
    return array.reshape(hf_shape)


def _iter_leaves(tree: Params) -> Iterator[tuple[tuple[str, ...], int | None, Any]]:
    """(path, layer index or None for stacked/top-level, leaf); unscanned layers give their index."""
    for key_path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        path = tuple(k.key for k in key_path)
        match = _LAYER_RE.match(path[0])
        if match:
            yield ("layers",) + path[1:], int(match.group(1)), leaf
        else:
            yield path, None, leaf


def _default_place(path: tuple[str, ...], array: np.ndarray) -> jax.Array:
    del path
    return jnp.asarray(array)


def load_hf_params(path: str | os.PathLike, cfg: ModelConfig,
                   place: Callable[[tuple[str, ...], np.ndarray], Any] = _default_place) -> Params:
    """Read a checkpoint into the param layout of `cfg`, one tensor at a time.

    `place(flax_path, host_array)` turns each finished host array into the
    stored leaf (default: a device array); the sharding code passes one that
    puts the leaf straight into its sharding.
    """
    abstract = abstract_params(cfg)
    param_dtype = jnp.dtype(cfg.param_dtype)
    consumed: set[str] = set()

    def read(reader, key: str, leaf_path, expected_flax: tuple[int, ...]) -> np.ndarray:
        if key not in reader:
            raise KeyError(f"{path}: checkpoint has no tensor {key!r} needed for {'/'.join(leaf_path)}")
        expected = _hf_shape(leaf_path, expected_flax)
        got = tuple(reader.shape(key))
        if got != expected:
            raise ValueError(f"{path}: tensor {key!r} has shape {got}, expected {expected} "
                             f"from config.json")
        consumed.add(key)
        return _to_flax(leaf_path, reader.get(key), expected_flax).astype(param_dtype)

    def load_leaf(reader, key_path, struct):
        leaf_path = tuple(k.key for k in key_path)
        match = _LAYER_RE.match(leaf_path[0])
        if match:  # unscanned layer
            return place(leaf_path, read(reader, _hf_key(leaf_path, int(match.group(1))), leaf_path,
                                         struct.shape))
        if leaf_path[0] != "layers":
            return place(leaf_path, read(reader, _hf_key(leaf_path, None), leaf_path, struct.shape))
        # Scanned layers: fill one stacked buffer layer by layer.
        buffer = np.empty(struct.shape, param_dtype)
        for i in range(struct.shape[0]):
            buffer[i] = read(reader, _hf_key(leaf_path, i), leaf_path, struct.shape[1:])
        return place(leaf_path, buffer)

    with CheckpointReader(path) as reader:
        params = jax.tree_util.tree_map_with_path(lambda kp, s: load_leaf(reader, kp, s), abstract)
        unused = sorted(set(reader.keys()) - consumed)
    # Tied checkpoints sometimes carry a redundant lm_head; anything else is worth a warning.
    unused = [k for k in unused if not (k == "lm_head.weight" and cfg.tie_embeddings)
              and not k.endswith("rotary_emb.inv_freq")]
    if unused:
        log.warning("%s: %d checkpoint tensors were not used: %s", path, len(unused), unused[:10])
    return params


def load_hf(path: str | os.PathLike, **overrides) -> tuple[Transformer, Params]:
    """Load a local HF model directory: returns (Flax module, params).

    `overrides` set ModelConfig fields the checkpoint does not decide, such as
    dtype="bfloat16", param_dtype, scan_layers, remat_policy.
    """
    cfg = read_hf_config(path, **overrides)
    return Transformer(cfg), load_hf_params(path, cfg)


def save_hf(path: str | os.PathLike, cfg: ModelConfig, params: Params, *, dtype: str | None = None,
            tokenizer: Any = None, max_shard_bytes: int = 5 * 2**30,
            extra_tensors: dict[str, np.ndarray] | None = None, hf_config: dict | None = None) -> None:
    """Write a directory that `transformers.AutoModelForCausalLM.from_pretrained` loads.

    dtype: storage dtype of the weights (default: cfg.param_dtype). Leaves are
    pulled to host one layer at a time, so saving needs no second full copy.
    extra_tensors ({HF name: array}) and hf_config (config.json entries that replace the
    derived ones) turn it into another head's layout, e.g. a reward model's `score.weight`.
    """
    params = strip_collection(params)
    dtype = dtype or cfg.param_dtype
    np_dtype = jnp.dtype(dtype)
    specs = []
    for leaf_path, layer, leaf in _iter_leaves(params):
        stacked = leaf_path[0] == "layers" and layer is None
        layers = range(leaf.shape[0]) if stacked else [layer]
        for i in layers:
            shape = leaf.shape[1:] if stacked else leaf.shape

            def produce(leaf=leaf, i=i, stacked=stacked, leaf_path=leaf_path):
                host = np.asarray(leaf[i] if stacked else leaf)
                return _to_hf(leaf_path, host).astype(np_dtype)

            specs.append(TensorSpec(_hf_key(leaf_path, i), _hf_shape(leaf_path, shape), np_dtype, produce))
    for name, array in (extra_tensors or {}).items():
        specs.append(TensorSpec(name, tuple(array.shape), np_dtype, lambda a=array: np.asarray(a).astype(np_dtype)))
    os.makedirs(path, exist_ok=True)
    write_checkpoint(path, specs, max_shard_bytes=max_shard_bytes, overwrite=True)
    with open(os.path.join(path, "config.json"), "w", encoding="utf-8") as f:
        json.dump({**config_to_hf(cfg, dtype=str(np_dtype)), **(hf_config or {})}, f, indent=2)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
