"""Read and write Hugging Face PEFT adapter directories (LoRA, DoRA, (IA)3, prompt tuning).

    from codejax.peft import save_hf_adapter, load_hf_adapter
    save_hf_adapter("out/adapter", model, adapters, base_model_name_or_path="org/base")
    # torch: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), "out/adapter")
    spec, adapters = load_hf_adapter("out/adapter", cfg)
    logits = Transformer(cfg, peft=spec).apply({"params": base, **adapters}, tokens)

A PEFT directory holds adapter_config.json and adapter_model.safetensors. The
tensors are named after the torch module they hang on, below PEFT's
`base_model.model.` wrapper; codejax modules carry the same names, so the
mapping is mechanical (one layer's slice of a stacked leaf per tensor):

    codejax (collection / path / leaf)          PEFT tensor                              shape
    lora  layers[i].self_attn.q_proj.lora_a     ...layers.{i}.self_attn.q_proj.lora_A.weight    [r, in]
    lora  ...                  .lora_b          ...lora_B.weight                          [out, r]
    lora  ...                  .lora_magnitude  ...lora_magnitude_vector (DoRA)           [out]
    ia3   ...k_proj.ia3_scale  [*out]           ...k_proj.ia3_l (output scaling)          [out, 1]
    ia3   ...down_proj.ia3_scale [*in]          ...down_proj.ia3_l (feed-forward input)   [1, in]
    prompt embedding [P, hidden]                prompt_embeddings                         [P, hidden]

where `...` is `base_model.model.model` and in/out are the kernel's input and
output dims flattened in order (q_proj's [heads, head_dim] output becomes
heads * head_dim rows, as in the base checkpoint; see codejax.models.hf).
torch stores A and B as Linear weights, [out_features, in_features], hence the
transposes. Scales and formulas agree: alpha/r (alpha/sqrt(r) with rslora),
DoRA's per-output-row norm of W + s*B@A, (IA)3 output scaling after the bias
and input scaling before the projection, prompt tuning's soft prompt prepended
with the real tokens at positions P..P+T-1.

PEFT selects modules by name (`target_modules`: suffixes of the torch module
path, one regex, or 'all-linear'); codejax selects projections by name for
every layer, so an adapter must cover the same projections in all layers.
Everything here runs on host numpy; loaded adapters are numpy arrays in
cfg.param_dtype (jax accepts them as they are).
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import Any

import jax
import numpy as np
from flax import traverse_util

from codejax.models.adapters import LAYER_PROJECTIONS, PeftSpec
from codejax.models.config import ModelConfig
from codejax.models.hf import _hf_key, _iter_leaves
from codejax.models.params import abstract_params
from codejax.models.safetensors_io import SafetensorsFile, save_file
from codejax.models.transformer import Transformer
from codejax.peft.api import init_adapters
from codejax.peft.methods import EXPORTABLE, PEFT_METHODS

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PREFIX = "base_model.model."  # PEFT's wrapper (PeftModel -> LoraModel/IA3Model) around the torch model
_PROMPT_KEY = "prompt_embeddings"
_SUFFIX = {"lora_a": "lora_A.weight", "lora_b": "lora_B.weight", "lora_magnitude": "lora_magnitude_vector",
           "ia3_scale": "ia3_l"}
_PROJECTIONS = LAYER_PROJECTIONS + ("lm_head",)
_LAYER_RE = re.compile(r"layers_(\d+)$")

# Config fields that change what the adapter computes, with the value codejax can honour.
# Anything else in adapter_config.json (bookkeeping such as peft_version, revision,
# inference_mode, init_lora_weights - PEFT ignores the init when loading too) is ignored.
_LORA_FIXED = {
    "fan_in_fan_out": (False, "codejax kernels are never stored transposed (GPT-2 Conv1D style)"),
    "bias": ("none", "trained base biases are not part of a codejax adapter"),
    "lora_bias": (False, "LoRA-B biases are not supported"),
    "rank_pattern": ({}, "per-module ranks are not supported; all targets share r"),
    "alpha_pattern": ({}, "per-module alphas are not supported; all targets share lora_alpha"),
    "layers_to_transform": (None, "adapters on a subset of layers are not supported"),
    "layer_replication": (None, "layer replication is not supported"),
    "exclude_modules": (None, "exclude_modules is not supported"),
    "modules_to_save": (None, "fully trained extra modules are not supported"),
    "trainable_token_indices": (None, "trainable token embeddings are not supported"),
    "target_parameters": (None, "adapters on raw parameters are not supported"),
    "alora_invocation_tokens": (None, "activated LoRA is not supported"),
    "use_qalora": (False, "QA-LoRA is not supported"),
}
_IA3_FIXED = {key: _LORA_FIXED[key] for key in ("fan_in_fan_out", "exclude_modules", "modules_to_save")}
_PROMPT_FIXED = {"modules_to_save": _LORA_FIXED["modules_to_save"],
                 "num_transformer_submodules": (1, "codejax is a decoder-only model (one transformer)")}


# ----------------------------------------------------------------------------- layout conversions

def _module_name(module_path: tuple[str, ...], layer: int | None) -> str:
    """The torch module path of a projection, e.g. 'model.layers.3.self_attn.q_proj'."""
    return _hf_key(module_path + ("kernel",), layer)[:-len(".weight")]


def _to_peft(leaf: str, array: np.ndarray, mode: str | None) -> np.ndarray:
    """One layer's codejax adapter leaf -> PEFT tensor (A, B as torch [out, in] weights)."""
    if leaf == "lora_a":  # [*in, r] -> [r, in]
        return array.reshape(-1, array.shape[-1]).T
    if leaf == "lora_b":  # [r, *out] -> [out, r]
        return array.reshape(array.shape[0], -1).T
    if leaf == "ia3_scale":  # PEFT keeps the vector shaped to broadcast on its side of the Linear
        return array.reshape((1, -1) if mode == "in" else (-1, 1))
    return array.reshape(-1)  # lora_magnitude


def _peft_shape(leaf: str, shape: tuple[int, ...], mode: str | None) -> tuple[int, ...]:
    """The PEFT tensor shape for one layer's codejax leaf of `shape`."""
    if leaf == "lora_a":
        return (shape[-1], math.prod(shape[:-1]))
    if leaf == "lora_b":
        return (math.prod(shape[1:]), shape[0])
    if leaf == "ia3_scale":
        return (1, math.prod(shape)) if mode == "in" else (math.prod(shape), 1)
    return (math.prod(shape),)


def _from_peft(leaf: str, tensor: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of `_to_peft`, into one layer's codejax `shape`."""
    if leaf in ("lora_a", "lora_b"):
        tensor = tensor.T
    return tensor.reshape(shape)


def _layer_of(module_path: tuple[str, ...]) -> int | None:
    """The layer index of an unscanned layer's module path (layers_3 -> 3); None at the top level."""
    match = _LAYER_RE.match(module_path[0])
    return int(match.group(1)) if match else None


def _layer_slices(module_path: tuple[str, ...], value: np.ndarray) -> list[tuple[int | None, np.ndarray]]:
    """(layer index or None, one layer's array) for a stacked, unscanned or top-level leaf."""
    if module_path[0] == "layers":  # scanned: leading layer axis
        return [(i, value[i]) for i in range(value.shape[0])]
    return [(_layer_of(module_path), value)]


def _any_layer(key: str) -> str:
    """A tensor name with its layer index blanked, to find the same tensor on other layers."""
    return re.sub(r"\.layers\.\d+\.", ".layers.*.", key, count=1)


def _ia3_mode(spec: PeftSpec, module_path: tuple[str, ...]) -> str | None:
    return spec.ia3_mode(module_path[-1], module_path)


# ----------------------------------------------------------------------------- save

def save_hf_adapter(path: str | os.PathLike, model, adapters: dict, base_model_name_or_path: str | None = None
                    ) -> None:
    """Write `adapters` (init_adapters' {collection: tree}, or the bare tree) as a PEFT directory.

    lora and qlora are written as plain LoRA (the NF4 base is a property of the
    base checkpoint, not of the adapter), dora as LoRA with use_dora. Tensors
    keep the adapters' dtype. Prefix tuning and bottleneck adapters have no PEFT
    format that computes the same function, so they raise.
    """
    spec, cfg = model.peft, model.cfg
    if spec is None or not spec.enabled:
        raise ValueError("save_hf_adapter: the model has no PEFT method (Transformer(cfg, peft=PeftSpec(...)))")
    peft_type = PEFT_METHODS[spec.method].hf_peft_type
    if peft_type is None:
        raise ValueError(f"save_hf_adapter: peft.method={spec.method!r} is not supported: HF PEFT has no "
                         f"equivalent format (supported: {sorted(EXPORTABLE)})")
    tree = adapters[spec.collection] if spec.collection in adapters else adapters
    tree = jax.tree_util.tree_map(np.asarray, tree)  # one device->host copy; the adapters are small

    if spec.layout.soft_prompt:
        embedding = tree["embedding"]
        tensors = {_PROMPT_KEY: embedding}
        config = dict(num_virtual_tokens=int(embedding.shape[0]), token_dim=int(embedding.shape[1]),
                      num_transformer_submodules=1, num_attention_heads=cfg.num_heads,
                      num_layers=cfg.num_layers, prompt_tuning_init="RANDOM", prompt_tuning_init_text=None,
                      tokenizer_name_or_path=None, tokenizer_kwargs=None)
    else:
        tensors, layers, modes = {}, {}, {}
        for flat_path, value in traverse_util.flatten_dict(tree).items():
            module_path, leaf = flat_path[:-1], flat_path[-1]
            if leaf not in _SUFFIX:
                raise ValueError(f"save_hf_adapter: unexpected adapter leaf {'/'.join(flat_path)}")
            if leaf == "lora_a" and value.shape[-1] != spec.rank:
                raise ValueError(f"save_hf_adapter: {'/'.join(flat_path)} has rank {value.shape[-1]}, "
                                 f"but peft.rank={spec.rank}")
            name, mode = module_path[-1], _ia3_mode(spec, module_path)
            modes.setdefault(name, set()).add(mode)
            for layer, array in _layer_slices(module_path, value):
                layers.setdefault(name, set()).add(layer)
                key = f"{_PREFIX}{_module_name(module_path, layer)}.{_SUFFIX[leaf]}"
                tensors[key] = _to_peft(leaf, array, mode)
        # PEFT names targets per module name, so each name must cover every layer the same way.
        for name, found in sorted(layers.items()):
            if found != {None} and found != set(range(cfg.num_layers)):
                raise ValueError(f"save_hf_adapter: {name} has adapters on layers {sorted(found)} only; PEFT "
                                 "target_modules cannot express a per-layer subset")
            if len(modes[name]) > 1:
                raise ValueError(f"save_hf_adapter: (IA)3 scales the input of {name} in some layers and its "
                                 "output in others; PEFT's feedforward_modules is per module name")
        targets = sorted(layers)
        if spec.layout.scales:
            config = dict(target_modules=targets, feedforward_modules=[n for n in targets if modes[n] == {"in"}],
                          fan_in_fan_out=False, init_ia3_weights=True, modules_to_save=None)
        else:
            alpha = int(spec.alpha) if float(spec.alpha).is_integer() else spec.alpha
            config = dict(r=spec.rank, lora_alpha=alpha, lora_dropout=spec.dropout, use_rslora=spec.rslora,
                          use_dora=spec.layout.magnitude, target_modules=targets, bias="none",
                          fan_in_fan_out=False, init_lora_weights=True, lora_bias=False, modules_to_save=None,
                          layers_to_transform=None, layers_pattern=None, rank_pattern={}, alpha_pattern={})
    config = dict(peft_type=peft_type, task_type="CAUSAL_LM", inference_mode=True,
                  base_model_name_or_path=base_model_name_or_path, revision=None, **config)
    os.makedirs(path, exist_ok=True)
    save_file(os.path.join(path, ADAPTER_WEIGHTS), tensors, metadata={"format": "pt"})
    with open(os.path.join(path, ADAPTER_CONFIG), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)


# ----------------------------------------------------------------------------- load

def _read_config(path: str) -> tuple[str, dict[str, Any]]:
    config_path = os.path.join(path, ADAPTER_CONFIG)
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{path}: no {ADAPTER_CONFIG}; expected a directory written by PEFT's "
                                "save_pretrained or codejax's save_hf_adapter")
    with open(config_path, encoding="utf-8") as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{config_path}: line {e.lineno}: invalid JSON: {e.msg}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: expected a JSON object")
    return config_path, config


def _check_fixed(config: dict, fixed: dict, source: str) -> None:
    for field, (ok, why) in fixed.items():
        value = config.get(field, ok)
        if value != ok and not (ok in (None, {}) and not value):  # None, {} and [] all mean "unused"
            raise ValueError(f"{source}: {field}={value!r} is not supported ({why})")


def _projections(abstract: dict) -> dict[str, tuple[tuple[str, ...], int | None]]:
    """torch module path -> (codejax module path, layer) for every projection in the params tree."""
    out = {}
    for path, layer, leaf in _iter_leaves(abstract):
        if path[-1] != "kernel" or path[-2] not in _PROJECTIONS:
            continue
        stacked = path[0] == "layers" and layer is None
        for i in (range(leaf.shape[0]) if stacked else [layer]):
            out[_module_name(path[:-1], i)] = (path[:-1], i)
    return out


def _resolve(config: dict, field: str, projections: dict, cfg: ModelConfig, source: str,
             allow_empty: bool = False) -> list[str]:
    """The projection names PEFT's `field` selects in `cfg`, checked to cover every layer alike.

    PEFT matches a list entry against the torch module path exactly or as a
    dotted suffix, and a single string as a full-match regex ('all-linear':
    every linear layer but the output head).
    """
    value = config.get(field)
    if isinstance(value, str):
        if value == "all-linear":
            selected = [m for m, (p, _) in projections.items() if p[-1] != "lm_head"]
        else:
            try:
                selected = [m for m in projections if re.fullmatch(value, m)]
            except re.error as e:
                raise ValueError(f"{source}: {field} regex {value!r}: {e}") from None
    elif isinstance(value, (list, tuple)):
        for entry in value:
            if not isinstance(entry, str) or entry.rsplit(".", 1)[-1] not in _PROJECTIONS:
                raise ValueError(f"{source}: {field} entry {entry!r} is not a codejax projection; "
                                 f"supported modules: {list(_PROJECTIONS)}")
        selected = [m for m in projections if any(m == e or m.endswith("." + e) for e in value)]
    elif value is None and allow_empty:
        selected = []
    else:
        raise ValueError(f"{source}: {field}={value!r}; expected a list of module names or a regex string")
    if not selected and not allow_empty:
        raise ValueError(f"{source}: {field}={value!r} selects no projection of this model "
                         f"(family {cfg.family}); the adapter may be for another base model")
    layers: dict[str, set] = {}
    for module in selected:
        module_path, layer = projections[module]
        layers.setdefault(module_path[-1], set()).add(layer)
    for name, found in sorted(layers.items()):
        if found != {None} and found != set(range(cfg.num_layers)):
            raise ValueError(f"{source}: {field} selects {name} on layers {sorted(found)} only, not on all "
                             f"{cfg.num_layers}; adapters on a subset of layers are not supported")
    return sorted(layers)


def _spec_from_config(config: dict, cfg: ModelConfig, abstract: dict, source: str) -> PeftSpec:
    peft_type = config.get("peft_type")
    task_type = config.get("task_type")
    if task_type not in (None, "CAUSAL_LM"):
        raise ValueError(f"{source}: task_type={task_type!r} is not supported; codejax models are CAUSAL_LM")
    projections = _projections(abstract)
    if peft_type == "LORA":
        _check_fixed(config, _LORA_FIXED, source)
        try:
            return PeftSpec("dora" if config.get("use_dora") else "lora", rank=int(config["r"]),
                            alpha=float(config["lora_alpha"]), rslora=bool(config.get("use_rslora", False)),
                            dropout=float(config.get("lora_dropout") or 0.0),
                            target_modules=tuple(_resolve(config, "target_modules", projections, cfg, source)))
        except KeyError as e:
            raise ValueError(f"{source}: missing field {e.args[0]!r}") from None
    if peft_type == "IA3":
        _check_fixed(config, _IA3_FIXED, source)
        targets = _resolve(config, "target_modules", projections, cfg, source)
        feedforward = _resolve(config, "feedforward_modules", projections, cfg, source,
                               allow_empty=True)
        return PeftSpec("ia3", ia3_target_modules=tuple(targets),
                        ia3_feedforward_modules=tuple(n for n in feedforward if n in targets))
    if peft_type == "PROMPT_TUNING":
        _check_fixed(config, _PROMPT_FIXED, source)
        token_dim = config.get("token_dim", cfg.hidden_size)
        if token_dim != cfg.hidden_size:
            raise ValueError(f"{source}: token_dim={token_dim}, but the model's hidden_size is "
                             f"{cfg.hidden_size}; the adapter may be for another base model")
        if "num_virtual_tokens" not in config:
            raise ValueError(f"{source}: missing field 'num_virtual_tokens'")
        # The init fields only matter for training from scratch; the loaded prompt replaces them.
        return PeftSpec("prompt", num_virtual_tokens=int(config["num_virtual_tokens"]))
    raise ValueError(f"{source}: peft_type={peft_type!r} is not supported; codejax reads "
                     f"{sorted({r.hf_peft_type for r in PEFT_METHODS.values() if r.hf_peft_type})}")


def load_hf_adapter(path: str | os.PathLike, cfg: ModelConfig) -> tuple[PeftSpec, dict]:
    """(PeftSpec, {collection: tree}) from a PEFT adapter directory, in `cfg`'s layout.

    Every tensor the model's adapter needs must be present with the shape `cfg`
    implies, and every tensor in the file must be used, so an adapter for a
    different base model or with an unsupported option fails here, naming the
    file and the tensor or config field, instead of computing something else.
    """
    path = os.fspath(path)
    config_path, config = _read_config(path)
    abstract = abstract_params(cfg)  # shapes only: tracing the model allocates nothing
    spec = _spec_from_config(config, cfg, abstract, config_path)
    weights_path = os.path.join(path, ADAPTER_WEIGHTS)
    if not os.path.isfile(weights_path):
        pickle = os.path.isfile(os.path.join(path, "adapter_model.bin"))
        raise FileNotFoundError(f"{path}: no {ADAPTER_WEIGHTS}" + (
            "; only adapter_model.bin (PyTorch pickle), which codejax does not read: re-save it with "
            "save_pretrained(safe_serialization=True)" if pickle else ""))
    # The model itself says which variables the spec creates and their shapes (no compute, no memory).
    expected = jax.eval_shape(lambda base: init_adapters(Transformer(cfg, peft=spec), base, jax.random.PRNGKey(0)),
                              abstract)[spec.collection]
    dtype = np.dtype(cfg.param_dtype)
    with SafetensorsFile(weights_path) as f:
        keys, used = set(f.keys()), set()

        def read(key: str, peft_shape: tuple[int, ...], what: str) -> np.ndarray:
            if key not in keys:
                # The same module's tensor on other layers means a per-layer subset, which PEFT allows.
                others = [k for k in keys if k != key and _any_layer(k) == _any_layer(key) != key]
                raise KeyError(f"{weights_path}: missing tensor {key!r} for {what}" + (
                    f"; other layers have it ({others[0]!r}), but adapters on a subset of layers are "
                    "not supported" if others else ""))
            got = tuple(f.shape(key))
            if got != peft_shape:
                raise ValueError(f"{weights_path}: tensor {key!r} has shape {got}, expected {peft_shape} for "
                                 f"{what} of this model config; the adapter may be for another base model")
            used.add(key)
            return f.get(key)

        if spec.layout.soft_prompt:
            shape = expected["embedding"].shape
            tree = {"embedding": read(_PROMPT_KEY, shape, "the soft prompt").astype(dtype)}
        else:
            flat = {}
            for flat_path, struct in traverse_util.flatten_dict(expected).items():
                module_path, leaf = flat_path[:-1], flat_path[-1]
                mode, stacked = _ia3_mode(spec, module_path), module_path[0] == "layers"
                shape = struct.shape[1:] if stacked else struct.shape
                parts = []
                for layer in (range(struct.shape[0]) if stacked else [_layer_of(module_path)]):
                    key = f"{_PREFIX}{_module_name(module_path, layer)}.{_SUFFIX[leaf]}"
                    what = "/".join(flat_path) + ("" if layer is None else f" (layer {layer})")
                    parts.append(_from_peft(leaf, read(key, _peft_shape(leaf, shape, mode), what), shape))
                flat[flat_path] = (np.stack(parts) if stacked else parts[0]).astype(dtype)
            tree = traverse_util.unflatten_dict(flat)
        unused = sorted(keys - used)
    if unused:
        raise ValueError(f"{weights_path}: {len(unused)} tensors are not part of the {config.get('peft_type')} "
                         f"adapter that {ADAPTER_CONFIG} describes for this model (e.g. {unused[:3]}); they may "
                         "come from an unsupported option or another base model")
    return spec, {spec.collection: tree}
