"""The variable collections a training run holds, and the two views of them a loss takes.

A Flax variables dict holds the model's own collections ("params", and a PEFT
method's collection such as "lora") and, beside them, collections the
Transformer never reads:

    HEAD   "score_head"    a scalar head [hidden, 1]: the reward model's score, PPO's value
    VALUE  "value_params"  a separate value model's weights (PPO with rl.value_head=separate)
    REF    "ref"           a frozen copy of the initial weights: the reference model of a full
                           fine-tuning run (with PEFT the reference is the base, adapters off)

`ModelVariables` splits them into what trains (gradients, optimizer state,
checkpoints) and what stays frozen, each with its logical axes for sharding.
A loss function gets one combined dict and takes exactly one of two views:
`policy_view` (what the Transformer reads) or `reference_view` (the reference
model). These are the only places that know which collections are which.
"""
from __future__ import annotations

import dataclasses
from typing import Any

HEAD = "score_head"
VALUE = "value_params"
REF = "ref"
NON_MODEL = (HEAD, VALUE, REF)  # collections the Transformer does not read


@dataclasses.dataclass
class ModelVariables:
    """A run's variables: `trainable` (gradients, optimizer state, checkpoints) and `frozen`
    (the PEFT base, a reference copy), each {collection: tree} with the same-shaped logical axes.
    Frozen variables are already placed in their shardings."""

    trainable: dict
    trainable_axes: dict
    frozen: dict = dataclasses.field(default_factory=dict)
    frozen_axes: dict = dataclasses.field(default_factory=dict)

    def with_trainable(self, name: str, tree: Any, axes: Any) -> "ModelVariables":
        return dataclasses.replace(self, trainable={**self.trainable, name: tree},
                                   trainable_axes={**self.trainable_axes, name: axes})

    def with_frozen(self, name: str, tree: Any, axes: Any) -> "ModelVariables":
        return dataclasses.replace(self, frozen={**self.frozen, name: tree}, frozen_axes={**self.frozen_axes, name: axes})

    def all(self) -> dict:
        """One variables dict of both (what a loss function is given)."""
        return combine(self.trainable, self.frozen)


def combine(trainable: dict, frozen: dict | None) -> dict:
    """One variables dict from the trainable and frozen collections."""
    return {**frozen, **trainable} if frozen else trainable


def policy_view(variables: dict) -> dict:
    """What the Transformer reads: every collection but heads, value models and the reference copy."""
    return {k: v for k, v in variables.items() if k not in NON_MODEL}


def reference_view(variables: dict) -> dict:
    """The reference model's variables: the frozen copy `REF` when there is one (full fine-tuning),
    else the base weights with the adapters off (PEFT: no second copy of the weights)."""
    return {"params": variables[REF] if REF in variables else variables["params"]}

