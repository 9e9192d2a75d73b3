"""Per-device memory estimate for a training step: state from shardings, activations from a formula.

State (exact, from the shardings):
    params      sum over leaves of size * bytes(param_dtype) / devices the leaf is split over
    grads       the same (gradients take the params' sharding and dtype)
    optimizer   AdamW: two moments per param in param_dtype, under the optimizer rules

Activations saved for the backward pass, per device (approximate), with
b = rows per device, T = seq_len, d = hidden, H/K = query/kv heads split over
'tensor', h = head_dim, I = intermediate / tensor, L = layers, s = compute bytes:

    per layer, no remat: T*b*s*(8d + 3Hh + 4Kh + 4I) + b*H*T*T*8    (scores and probs in f32)
    dots:                T*b*s*(Hh + 2Kh + 2d + 2I + Hh) + b*H*T*T*4 (matmul outputs only)
    minimal:             T*b*s*3d                                    (layer input, attn_out, mlp_out)
    full:                T*b*s*d                                     (layer input only)
    every remat policy also holds one layer's no-remat set while it is recomputed,
    and the loss holds ~3 float32 copies of the logits: 3 * b*T*V*4 / tensor.

`tests/parallel/test_memory.py` checks the activation part against XLA's
compiled memory analysis (temp bytes) for every policy.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from codejax.models import ModelConfig, abstract_params, logical_axes
from codejax.parallel.sharding import Parallel


def _sharded_bytes(abstract: Any, shardings: Any, dtype) -> int:
    itemsize = jnp.dtype(dtype).itemsize
    total = 0
    for leaf, sharding in zip(jax.tree_util.tree_leaves(abstract), jax.tree_util.tree_leaves(
            shardings, is_leaf=lambda x: isinstance(x, jax.sharding.NamedSharding))):
        mesh = dict(sharding.mesh.shape)
        parts = math.prod(mesh[a] for axes in sharding.spec if axes is not None
                          for a in ((axes,) if isinstance(axes, str) else axes))
        total += leaf.size * itemsize // parts
    return total


def activation_bytes(cfg: ModelConfig, rows_per_device: int, seq_len: int, tensor: int = 1) -> int:
    """Bytes of activations kept for the backward pass on one device (see module docstring)."""
    b, t, s = rows_per_device, seq_len, jnp.dtype(cfg.dtype).itemsize
    d, h = cfg.hidden_size, cfg.head_dim
    heads, kv, inter = cfg.num_heads / tensor, cfg.num_kv_heads / tensor, cfg.intermediate_size / tensor
    tokens = b * t
    no_remat_layer = tokens * s * (8 * d + 3 * heads * h + 4 * kv * h + 4 * inter) + b * heads * t * t * 8
    policy = cfg.remat_policy
    if policy == "none":
        layers = cfg.num_layers * no_remat_layer
    else:
        saved = {"full": d, "minimal": 3 * d,
                 "dots": heads * h + 2 * kv * h + 2 * d + 2 * inter + heads * h}[
                     "dots" if policy.startswith("dots") else policy]
        per_layer = tokens * s * saved + (b * heads * t * t * 4 if policy.startswith("dots") else 0)
        layers = cfg.num_layers * per_layer + no_remat_layer
    logits = 3 * tokens * cfg.vocab_size * 4 / tensor
    return int(layers + logits)


def estimate_memory(cfg: ModelConfig, par: Parallel, global_batch: int, seq_len: int,
                    grad_accum_steps: int = 1) -> dict[str, int]:
    """Bytes per device for params, grads, optimizer state, activations and their total."""
    abstract, axes = abstract_params(cfg), logical_axes(cfg)
    params = _sharded_bytes(abstract, par.param_shardings(axes), cfg.param_dtype)
    moments = _sharded_bytes(abstract, par.param_shardings(axes, par.opt_rules), cfg.param_dtype)
    mesh = dict(par.mesh.shape)
    rows = global_batch // grad_accum_steps // (mesh["data"] * mesh["fsdp"])
    acts = activation_bytes(cfg, max(rows, 1), seq_len, mesh["tensor"])
    out = {"params": params, "grads": params, "optimizer": 2 * moments, "activations": acts}
    out["total"] = sum(out.values())
    return out
