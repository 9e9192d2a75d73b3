"""One row per PEFT method: what it means outside the model (merging, the HF PEFT format).

Where a method acts *inside* the model (its collection, its layers) is its
`codejax.models.adapters.LAYOUTS` row; this table adds the rest:

    method   merge            unmerge   HF PEFT type     export dtype   SFT lr (tiny)
    none     -                -         -                -
    lora     W + s A B        yes       LORA             param dtype    2e-4 (1e-2)
    qlora    as lora          yes       LORA             bfloat16       2e-4 (1e-2)  (the base was 4-bit)
    dora     m (W + s A B)/|.| no       LORA, use_dora   param dtype    2e-4 (1e-2)
    prefix   -                -         -                               1e-2 (1e-2)  (no HF layout)
    prompt   -                -         PROMPT_TUNING                   3e-2 (3e-2)
    adapter  -                -         -                               1e-3 (3e-3)  (no Houlsby in HF PEFT)
    ia3      W * l            yes       IA3                             3e-3 (1e-2)

A merge (or unmerge) function maps one adapted projection:
`fn(model, module_path, kernel, bias, leaves) -> (kernel, bias)`, with the kernel
(and bias, None when the projection has none) in float32, `leaves` that
projection's adapter variables ({"lora_a": ..., "lora_b": ...}), and a leading
layer axis on everything when the layers are scanned (module_path[0] == "layers").

To add a method: a LAYOUTS row and its layer in codejax/models/adapters.py, a row
here, and a test in tests/peft/test_methods.py (CONTRIBUTING.md walks through one).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from codejax.models.adapters import LAYOUTS, Layout

ProjectionMap = Callable[..., tuple]  # (model, module_path, kernel, bias, leaves) -> (kernel, bias)


@dataclasses.dataclass(frozen=True)
class PeftMethod:
    name: str
    merge: ProjectionMap | None = None  # folds the adapter into the base weights; None: not mergeable
    unmerge: ProjectionMap | None = None  # the base back from merged weights; None: not possible
    unmerge_note: str = ""  # why not, when merge exists but unmerge does not
    hf_peft_type: str | None = None  # HF PEFT's peft_type for its adapter directory; None: no such format
    export_dtype: str | None = None  # dtype of a merged export; None: the model's param dtype
    # Learning rates that work for SFT with this method, on a real model and on the :tiny config
    # (prompt-like methods want far larger steps than LoRA).
    lr: float = 2e-4
    tiny_lr: float = 1e-2

    @property
    def layout(self) -> Layout:
        return LAYOUTS[self.name]

    @property
    def mergeable(self) -> bool:
        return self.merge is not None


def _stacked(path: tuple[str, ...]) -> bool:
    return path[0] == "layers"  # scanned layers carry a leading layer axis


def _lora_delta(leaves: dict, scale: float, stacked: bool):
    """s * A @ B over the rank axis, per layer when stacked: [L?, *in, *out]."""
    a, b = leaves["lora_a"].astype(jnp.float32), leaves["lora_b"].astype(jnp.float32)
    delta = lambda a, b: jnp.tensordot(a, b, axes=1)  # noqa: E731
    return scale * (jax.vmap(delta)(a, b) if stacked else delta(a, b))


def broadcast_to_kernel(vector, kernel, stacked: bool, side: str):
    """Reshape a per-output (or per-input) vector so it multiplies the kernel on that side."""
    lead = 1 if stacked else 0
    n_vec = vector.ndim - lead
    n_other = kernel.ndim - lead - n_vec
    if side == "out":  # [L?, *out] -> [L?, 1.., *out]
        return vector.reshape(vector.shape[:lead] + (1,) * n_other + vector.shape[lead:])
    return vector.reshape(vector.shape + (1,) * n_other)  # [L?, *in] -> [L?, *in, 1..]


def _merge_lora(model, path, kernel, bias, leaves):
    return kernel + _lora_delta(leaves, model.peft.scale, _stacked(path)), bias


def _unmerge_lora(model, path, kernel, bias, leaves):
    return kernel - _lora_delta(leaves, model.peft.scale, _stacked(path)), bias


def _merge_dora(model, path, kernel, bias, leaves):
    """m * (W + s*A@B) / ||W + s*A@B|| per output column."""
    stacked = _stacked(path)
    weight = kernel + _lora_delta(leaves, model.peft.scale, stacked)
    magnitude = leaves["lora_magnitude"].astype(jnp.float32)
    lead, n_in = int(stacked), kernel.ndim - magnitude.ndim
    norm = jnp.sqrt(jnp.sum(jnp.square(weight), axis=tuple(range(lead, lead + n_in)), keepdims=True))
    return weight * broadcast_to_kernel(magnitude, weight, stacked, "out") / norm, bias


def _ia3_side(model, path) -> str:
    return "in" if model.peft.ia3_mode(path[-1], path) == "in" else "out"


def _merge_ia3(model, path, kernel, bias, leaves):
    """W scaled on its output side (and the bias with it) or its input side."""
    scale, side = leaves["ia3_scale"].astype(jnp.float32), _ia3_side(model, path)
    kernel = kernel * broadcast_to_kernel(scale, kernel, _stacked(path), side)
    return kernel, bias * scale if side == "out" and bias is not None else bias


def _unmerge_ia3(model, path, kernel, bias, leaves):
    scale, side = leaves["ia3_scale"].astype(jnp.float32), _ia3_side(model, path)
    kernel = kernel / broadcast_to_kernel(scale, kernel, _stacked(path), side)
    return kernel, bias / scale if side == "out" and bias is not None else bias


PEFT_METHODS: dict[str, PeftMethod] = {row.name: row for row in (
    PeftMethod("none"),
    PeftMethod("lora", _merge_lora, _unmerge_lora, hf_peft_type="LORA"),
    PeftMethod("qlora", _merge_lora, _unmerge_lora, hf_peft_type="LORA", export_dtype="bfloat16"),
    PeftMethod("dora", _merge_dora, unmerge_note="DoRA's merged weights do not determine the base (the column "
               "norm it divided by is gone): keep the base params", hf_peft_type="LORA"),
    PeftMethod("prefix", lr=1e-2),
    PeftMethod("prompt", hf_peft_type="PROMPT_TUNING", lr=3e-2, tiny_lr=3e-2),
    PeftMethod("adapter", lr=1e-3, tiny_lr=3e-3),
    PeftMethod("ia3", _merge_ia3, _unmerge_ia3, hf_peft_type="IA3", lr=3e-3),
)}
assert set(PEFT_METHODS) == set(LAYOUTS), "every model layout needs a PEFT_METHODS row"

MERGEABLE = tuple(name for name, row in PEFT_METHODS.items() if row.mergeable)
EXPORTABLE = tuple(name for name, row in PEFT_METHODS.items() if row.hf_peft_type)  # HF PEFT has a format


def get_method(name: str) -> PeftMethod:
    try:
        return PEFT_METHODS[name]
    except KeyError:
        raise ValueError(f"peft.method={name!r}; expected one of {tuple(PEFT_METHODS)}") from None
