"""Logical axis rules: which mesh axes each logical name is split over.

The model names every parameter dimension (vocab, embed, mlp, heads, kv_heads,
head_dim, layers) and every activation dimension (activation_*); a strategy is
nothing more than a table from those names to the mesh axes
('data', 'fsdp', 'tensor'). No model code mentions a mesh axis.

Presets:
  dp       params replicated; the batch split over every device.
  fsdp     ZeRO-3-like: params (and so grads and optimizer state) split over
           'fsdp' along the embed dimension; the batch over data x fsdp.
  tp       Megatron-style tensor parallelism: heads, kv_heads, mlp and vocab
           over 'tensor'.
  fsdp_tp  both.
  zero1    params and grads replicated, optimizer state split over data x fsdp
           (see `optimizer_rules`).
"""
from __future__ import annotations

from typing import Sequence

Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

BATCH_AXES = ("data", "fsdp")

# Activations: the batch is always split over data x fsdp; model dims follow 'tensor'.
_ACTIVATIONS_TP: Rules = (
    ("activation_batch", BATCH_AXES), ("activation_length", None), ("activation_embed", None),
    ("activation_heads", "tensor"), ("activation_kv_heads", "tensor"), ("activation_mlp", "tensor"),
    ("activation_vocab", "tensor"),
)
_ACTIVATIONS_NO_TP: Rules = tuple((name, BATCH_AXES if name == "activation_batch" else None)
                                  for name, _ in _ACTIVATIONS_TP)
_REPLICATED_PARAMS: Rules = tuple((name, None) for name in
                                  ("vocab", "embed", "mlp", "heads", "kv_heads", "head_dim", "layers"))
_TENSOR_PARAMS: Rules = (("vocab", "tensor"), ("mlp", "tensor"), ("heads", "tensor"), ("kv_heads", "tensor"))

PRESETS: dict[str, Rules] = {
    "dp": _REPLICATED_PARAMS + _ACTIVATIONS_NO_TP,
    "fsdp": (("embed", "fsdp"),) + _REPLICATED_PARAMS + _ACTIVATIONS_NO_TP,
    "tp": _TENSOR_PARAMS + _REPLICATED_PARAMS + _ACTIVATIONS_TP,
    "fsdp_tp": (("embed", "fsdp"),) + _TENSOR_PARAMS + _REPLICATED_PARAMS + _ACTIVATIONS_TP,
    "zero1": _REPLICATED_PARAMS + _ACTIVATIONS_NO_TP,
}

# ZeRO-1 keeps params whole but splits the optimizer's moments over every batch device.
_ZERO1_OPTIMIZER: Rules = (("embed", BATCH_AXES),) + _REPLICATED_PARAMS


def parse_rules(overrides: str | Sequence[Sequence]) -> Rules:
    """Overrides as ((name, axes), ...) or the command-line form "mlp=tensor,embed=data+fsdp,heads=none"."""
    if not isinstance(overrides, str):
        return tuple((str(name), _axes(axes)) for name, axes in overrides)
    rules = []
    for item in filter(None, (part.strip() for part in overrides.split(","))):
        name, sep, axes = item.partition("=")
        if not sep:
            raise ValueError(f"parallel.rules entry {item!r}: expected logical_name=mesh_axis[+mesh_axis]")
        parts = tuple(a.strip() for a in axes.split("+"))
        bad = [a for a in parts if a not in ("data", "fsdp", "tensor", "none")]
        if bad:
            raise ValueError(f"parallel.rules entry {item!r}: unknown mesh axis {bad[0]!r}; "
                             "expected data, fsdp, tensor or none")
        rules.append((name.strip(), None if parts == ("none",) else parts[0] if len(parts) == 1 else parts))
    return tuple(rules)


def logical_rules(preset: str, overrides: str | Sequence[Sequence] = ()) -> Rules:
    """The preset's rules with `overrides` taking precedence (see `parse_rules` for the forms).

    Flax uses the first rule that names a logical axis, so overrides go first.
    """
    if preset not in PRESETS:
        raise ValueError(f"parallel.preset={preset!r}; expected one of {sorted(PRESETS)}")
    return parse_rules(overrides) + PRESETS[preset]


def optimizer_rules(preset: str, overrides: str | Sequence[Sequence] = ()) -> Rules:
    """Rules for optimizer state: the param rules, except under zero1."""
    if preset == "zero1":
        return parse_rules(overrides) + _ZERO1_OPTIMIZER
    return logical_rules(preset, overrides)


def _axes(axes):
    if axes is None or isinstance(axes, str):
        return axes
    return tuple(axes)
