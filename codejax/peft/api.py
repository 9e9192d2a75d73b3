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

from codejax.models import nf4
from codejax.models.adapters import LAYER_PROJECTIONS
from codejax.models.config import ModelConfig
from codejax.models.params import Params, abstract_params, dummy_tokens
from codejax.models.transformer import Transformer
from codejax.peft.methods import MERGEABLE, PEFT_METHODS, get_method


def _create(model: Transformer, base: Params, rng: jax.Array) -> dict:
    collection = _collection(model)
    with nn.logical_axis_rules(()):  # the [1, 1] dummy batch cannot follow activation rules
        _, variables = model.apply({"params": base}, dummy_tokens(), mutable=[collection],
                                   rngs={"params": rng})
    if collection not in variables:
        spec = model.peft
        field, value = ("ia3_target_modules", spec.ia3_target_modules) if spec.layout.scales \
            else ("target_modules", spec.target_modules)
        raise ValueError(f"peft.{field}={','.join(value)!r} matches no module of this {model.cfg.family} model, "
                         f"so peft.method={spec.method!r} has nothing to train")
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

def _map_projections(model: Transformer, params: Params, adapters: dict, fn) -> Params:
    """Apply a PEFT_METHODS merge/unmerge function to every adapted projection; kernels back in param_dtype."""
    flat = dict(traverse_util.flatten_dict(params))
    leaves = traverse_util.flatten_dict(adapters[model.peft.collection])
    for path in sorted({p[:-1] for p in leaves}):
        own = {p[-1]: v for p, v in leaves.items() if p[:-1] == path}
        kernel, bias = fn(model, path, flat[path + ("kernel",)].astype(jnp.float32), flat.get(path + ("bias",)), own)
        flat[path + ("kernel",)] = kernel.astype(model.cfg.param_dtype)
        if bias is not None:
            flat[path + ("bias",)] = bias
    return traverse_util.unflatten_dict(flat)


def merge(model: Transformer, variables: dict) -> Params:
    """Fold the adapter into the base: dense params for the plain `Transformer(cfg)`.

    LoRA: W + s*A@B. DoRA: m * (W + s*A@B) / ||W + s*A@B|| per output column.
    (IA)3: W scaled on its output (and the bias) or input side. A QLoRA base is
    dequantised first, so the result is dense in cfg.param_dtype. Prefix and
    prompt tuning and bottleneck adapters add computation that no weight
    change reproduces, so they cannot be merged (codejax/peft/methods.py).
    """
    row = get_method(model.peft.method if model.peft is not None else "none")
    if not row.mergeable:
        raise ValueError(f"peft.method={row.name!r} cannot be merged into the base weights; "
                         f"mergeable methods: {MERGEABLE}")
    return _map_projections(model, dequantize_base(variables["params"], model.cfg), variables, row.merge)


def unmerge(model: Transformer, merged: Params, adapters: dict) -> Params:
    """The base back from `merge`'s output: W - s*A@B for LoRA, W / scale for (IA)3.

    DoRA cannot be unmerged from the merged weights alone (the column norm it
    divided by is gone); keep the base, which `merge` never modifies.
    """
    row = get_method(model.peft.method if model.peft is not None else "none")
    if row.unmerge is None:
        able = tuple(name for name, r in PEFT_METHODS.items() if r.unmerge is not None)
        raise ValueError(f"unmerge supports {', '.join(able)}, not {row.name!r}"
                         + (f"; {row.unmerge_note}" if row.unmerge_note else ""))
    return _map_projections(model, merged, adapters, row.unmerge)
