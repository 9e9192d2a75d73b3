"""Helpers over model parameter pytrees: shapes, logical axes, layer stacking."""
from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from codejax.models.config import ModelConfig
from codejax.models.transformer import Transformer

Params = dict[str, Any]

_LAYER_RE = re.compile(r"layers_(\d+)$")


def dummy_tokens() -> jnp.ndarray:
    """The [1, 1] batch that init and shape tracing run on."""
    return jnp.zeros((1, 1), jnp.int32)


def init_params(cfg: ModelConfig, rng: jax.Array) -> Params:
    """Randomly initialised params (unboxed) for `cfg`.

    The [1, 1] dummy batch cannot be split over a mesh, so activation rules are
    cleared while it runs; param shardings come from the caller's out_shardings.
    """
    with nn.logical_axis_rules(()):
        return nn.unbox(Transformer(cfg).init(rng, dummy_tokens()))["params"]


def abstract_params(cfg: ModelConfig) -> Params:
    """Params as jax.ShapeDtypeStruct leaves, computed without allocating memory."""
    boxed = jax.eval_shape(lambda: Transformer(cfg).init(jax.random.PRNGKey(0), dummy_tokens()))
    return nn.unbox(boxed)["params"]


def logical_axes(cfg: ModelConfig) -> Params:
    """The logical axis names of every parameter, as a pytree of PartitionSpecs."""
    boxed = jax.eval_shape(lambda: Transformer(cfg).init(jax.random.PRNGKey(0), dummy_tokens()))
    return nn.get_partition_spec(boxed)["params"]


def count_leaves(params: Params) -> int:
    """Total number of scalars in a params pytree."""
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))


def strip_collection(variables: Params) -> Params:
    """Accept either {'params': tree} or the bare tree, boxed or not."""
    variables = nn.unbox(variables)
    if set(variables) == {"params"}:
        return variables["params"]
    return variables


def stack_layers(params: Params, num_layers: int) -> Params:
    """Convert an unscanned tree (layers_0, layers_1, ...) to the scanned layout (layers, stacked)."""
    out = {k: v for k, v in params.items() if not _LAYER_RE.match(k)}
    per_layer = [params[f"layers_{i}"] for i in range(num_layers)]
    out["layers"] = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *per_layer)
    return out


def unstack_layers(params: Params) -> Params:
    """Convert the scanned layout (layers, stacked on axis 0) to layers_0, layers_1, ..."""
    out = {k: v for k, v in params.items() if k != "layers"}
    stacked = params["layers"]
    num_layers = jax.tree_util.tree_leaves(stacked)[0].shape[0]
    for i in range(num_layers):
        out[f"layers_{i}"] = jax.tree_util.tree_map(lambda x, i=i: x[i], stacked)
    return out
