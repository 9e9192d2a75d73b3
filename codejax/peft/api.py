"""Functions over a PEFT model's variables: create adapters, quantise the base, merge, count.

Everything here is a pure function of pytrees. A model's variables are
{"params": base, <collection>: adapters}; the base is never modified in place,
so "switching adapters" is passing a different collection to `apply`:

    variables = {"params": base, **adapters["python"]}   # or adapters["sql"]
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from codejax.models.config import ModelConfig
from codejax.models.params import Params, abstract_params, dummy_tokens
from codejax.models.transformer import Transformer
from codejax.peft import nf4
from codejax.peft.spec import LAYER_PROJECTIONS

MERGEABLE = ("lora", "qlora", "dora", "ia3")


def _create(model: Transformer, base: Params, rng: jax.Array) -> dict:
    collection = _collection(model)
    with nn.logical_axis_rules(()):  # the [1, 1] dummy batch cannot follow activation rules
        _, variables = model.apply({"params": base}, dummy_tokens(), mutable=[collection],
                                   rngs={"params": rng})
    return {collection: variables[collection]}


def _collection(model: Transformer) -> str:
    if model.peft is None or model.peft.collection is None:
        raise ValueError("the model has no PEFT method (Transformer(cfg, peft=PeftSpec(method=...)))")
    return model.peft.collection


def init_adapters(model: Transformer, base: Params, rng: jax.Array) -> dict:
    """Fresh adapter variables {collection: tree} for `model.peft` on top of `base`.

    Initialisers see the real base weights (DoRA's magnitudes are the base's
    column norms; prompt_init='vocab' copies embedding rows), so call this after
    loading the base. Outputs equal the base's wherever the method allows it:
    LoRA's B, adapters' up-projections start at zero and (IA)3 scales at one.
    """
    return nn.unbox(_create(model, base, rng))


def adapter_axes(model: Transformer, base: Params) -> dict:
    """Logical axis names of the adapter variables (PartitionSpecs), for sharding."""
    boxed = jax.eval_shape(lambda b: _create(model, b, jax.random.PRNGKey(0)), base)
    return nn.get_partition_spec(boxed)


def count_params(tree: Any) -> int:
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(tree))


# ----------------------------------------------------------------------------- QLoRA base

def _is_quantizable(path: tuple[str, ...]) -> bool:
    # Every decoder-layer projection, as bitsandbytes' QLoRA does (the embedding and lm_head stay).
    return path[-1] == "kernel" and len(path) >= 2 and path[-2] in LAYER_PROJECTIONS


def _stacked(path: tuple[str, ...]) -> bool:
    return path[0] == "layers"  # scanned layers carry a leading layer axis


def quantize_base(params: Params) -> Params:
    """Replace every layer projection's kernel by NF4 fields kernel_codes, kernel_absmax, ...

    Stacked (scanned) kernels are quantised layer by layer, so every field keeps
    the leading layer axis the scan slices.
    """
    flat = traverse_util.flatten_dict(params)
    out = {}
    for path, leaf in flat.items():
        if not _is_quantizable(path):
            out[path] = leaf
            continue
        fields = (jax.vmap(nf4.quantize) if _stacked(path) else nf4.quantize)(leaf)
        for name, value in fields.items():
            out[path[:-1] + (f"kernel_{name}",)] = value
    return traverse_util.unflatten_dict(out)


def quantized_axes(axes: Params) -> Params:
    """Logical axes of `quantize_base`'s output, given the dense params' axes.

    The NF4 blocks have no model meaning, so they are named 'nf4_blocks' (no
    rule maps it: the quantised base is replicated; at 4 bits that is 1/4 of a
    bf16 copy).
    """
    flat = traverse_util.flatten_dict(axes, is_leaf=lambda _, x: isinstance(x, jax.sharding.PartitionSpec))
    out = {}
    for path, spec in flat.items():
        if not _is_quantizable(path):
            out[path] = spec
            continue
        lead = ("layers",) if _stacked(path) else ()
        field_axes = {"codes": ("nf4_blocks", None), "absmax": ("nf4_blocks",), "absmax_scale": (None,),
                      "absmax_offset": ()}
        for name, names in field_axes.items():
            out[path[:-1] + (f"kernel_{name}",)] = jax.sharding.PartitionSpec(*lead, *names)
    return traverse_util.unflatten_dict(out)


def dequantize_base(params: Params, cfg: ModelConfig) -> Params:
    """Dense params (in cfg.param_dtype) from a quantised base; dense leaves pass through."""
    shapes = traverse_util.flatten_dict(abstract_params(cfg))
    flat = traverse_util.flatten_dict(params)
    out = {}
    for path, struct in shapes.items():
        if path in flat:
            out[path] = flat[path]
            continue
        fields = {name: flat[path[:-1] + (f"kernel_{name}",)] for name in nf4.FIELDS}
        shape = struct.shape[1:] if _stacked(path) else struct.shape
        deq = lambda q, shape=shape: nf4.dequantize(q, shape, cfg.param_dtype)  # noqa: E731
        out[path] = (jax.vmap(deq) if _stacked(path) else deq)(fields)
    return traverse_util.unflatten_dict(out)


# ----------------------------------------------------------------------------- merge / unmerge

def _lora_delta(a, b, stacked: bool):
    """A @ B over the rank axis, per layer when stacked: [*in, *out]."""
    delta = lambda a, b: jnp.tensordot(a, b, axes=1)  # noqa: E731
    return jax.vmap(delta)(a, b) if stacked else delta(a, b)


def _broadcast_to_kernel(vector, kernel, stacked: bool, side: str):
    """Reshape an (IA)3 scale over the kernel's output (or input) dims so it multiplies the kernel."""
    lead = 1 if stacked else 0
    n_vec = vector.ndim - lead
    n_other = kernel.ndim - lead - n_vec
    if side == "out":  # [L?, *out] -> [L?, 1.., *out]
        return vector.reshape(vector.shape[:lead] + (1,) * n_other + vector.shape[lead:])
    return vector.reshape(vector.shape + (1,) * n_other)  # [L?, *in] -> [L?, *in, 1..]


def _ia3_side(model: Transformer, path: tuple[str, ...]) -> str:
    module = path[-2]
    return "in" if model.peft.ia3_mode(module, path[:-1]) == "in" else "out"


def merge(model: Transformer, variables: dict) -> Params:
    """Fold the adapter into the base: dense params for the plain `Transformer(cfg)`.

    LoRA: W + s*A@B. DoRA: m * (W + s*A@B) / ||W + s*A@B|| per output column.
    (IA)3: W scaled on its output (and the bias) or input side. A QLoRA base is
    dequantised first, so the result is dense in cfg.param_dtype. Prefix and
    prompt tuning and bottleneck adapters add computation that no weight
    change reproduces, so they cannot be merged.
    """
    spec = model.peft
    if spec is None or spec.method not in MERGEABLE:
        raise ValueError(f"peft.method={spec and spec.method!r} cannot be merged into the base weights; "
                         f"mergeable methods: {MERGEABLE}")
    base = dequantize_base(variables["params"], model.cfg)
    flat = traverse_util.flatten_dict(base)
    adapters = traverse_util.flatten_dict(variables[spec.collection])
    for path in {p[:-1] for p in adapters}:
        stacked = _stacked(path)
        kernel_path = path + ("kernel",)
        kernel = flat[kernel_path].astype(jnp.float32)
        if spec.method == "ia3":
            scale = adapters[path + ("ia3_scale",)].astype(jnp.float32)
            side = _ia3_side(model, kernel_path)
            flat[kernel_path] = kernel * _broadcast_to_kernel(scale, kernel, stacked, side)
            if side == "out" and path + ("bias",) in flat:
                flat[path + ("bias",)] = flat[path + ("bias",)] * scale
            continue
        weight = kernel + spec.scale * _lora_delta(adapters[path + ("lora_a",)].astype(jnp.float32),
                                                   adapters[path + ("lora_b",)].astype(jnp.float32), stacked)
        if spec.method == "dora":
            magnitude = adapters[path + ("lora_magnitude",)].astype(jnp.float32)
            lead, n_in = int(stacked), kernel.ndim - magnitude.ndim
            norm = jnp.sqrt(jnp.sum(jnp.square(weight), axis=tuple(range(lead, lead + n_in)), keepdims=True))
            weight = weight * _broadcast_to_kernel(magnitude, weight, stacked, "out") / norm
        flat[kernel_path] = weight
    for path in {p[:-1] + ("kernel",) for p in adapters}:
        flat[path] = flat[path].astype(model.cfg.param_dtype)
    return traverse_util.unflatten_dict(flat)


def unmerge(model: Transformer, merged: Params, adapters: dict) -> Params:
    """The base back from `merge`'s output: W - s*A@B for LoRA, W / scale for (IA)3.

    DoRA cannot be unmerged from the merged weights alone (the column norm it
    divided by is gone); keep the base, which `merge` never modifies.
    """
    spec = model.peft
    if spec is None or spec.method not in ("lora", "qlora", "ia3"):
        raise ValueError(f"unmerge supports lora, qlora and ia3, not {spec and spec.method!r}"
                         + ("; DoRA's merged weights do not determine the base: keep the base params"
                            if spec is not None and spec.method == "dora" else ""))
    flat = dict(traverse_util.flatten_dict(merged))
    adapter_flat = traverse_util.flatten_dict(adapters[spec.collection])
    for path in {p[:-1] for p in adapter_flat}:
        stacked, kernel_path = _stacked(path), path + ("kernel",)
        kernel = flat[kernel_path].astype(jnp.float32)
        if spec.method == "ia3":
            scale = adapter_flat[path + ("ia3_scale",)].astype(jnp.float32)
            side = _ia3_side(model, kernel_path)
            kernel = kernel / _broadcast_to_kernel(scale, kernel, stacked, side)
            if side == "out" and path + ("bias",) in flat:
                flat[path + ("bias",)] = flat[path + ("bias",)] / scale
        else:
            kernel = kernel - spec.scale * _lora_delta(adapter_flat[path + ("lora_a",)].astype(jnp.float32),
                                                       adapter_flat[path + ("lora_b",)].astype(jnp.float32),
                                                       stacked)
        flat[kernel_path] = kernel.astype(model.cfg.param_dtype)
    return traverse_util.unflatten_dict(flat)
