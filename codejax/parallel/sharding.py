"""From logical axis names to shardings of params, optimizer state and batches.

`Parallel` bundles a mesh with its logical rules. Everything placed on devices
goes through it, so a strategy change is a config change:

    par = Parallel.create(make_mesh(data=2, fsdp=4), "fsdp")
    shardings = par.state_shardings(optimizer, abstract_params, axes)
    with par.context():           # activation constraints see the rules and mesh
        state = jax.jit(init, out_shardings=shardings)(...)
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from codejax.parallel.mesh import make_mesh, maybe_initialize_distributed
from codejax.parallel.rules import BATCH_AXES, Rules, logical_rules, optimizer_rules

Shardings = Any  # a pytree of NamedSharding


def _is_spec(x) -> bool:
    return isinstance(x, PartitionSpec)


@dataclasses.dataclass(frozen=True)
class Parallel:
    mesh: Mesh
    rules: Rules
    opt_rules: Rules

    @classmethod
    def create(cls, mesh: Mesh, preset: str = "dp", overrides=()) -> "Parallel":
        return cls(mesh, logical_rules(preset, overrides), optimizer_rules(preset, overrides))

    @classmethod
    def single_device(cls) -> "Parallel":
        """A one-device mesh: the same code path without any splitting."""
        return cls.create(make_mesh(1, 1, 1, devices=jax.devices()[:1]), "dp")

    @contextlib.contextmanager
    def context(self):
        """Mesh and rules in scope, so `nn.with_logical_constraint` in the model takes effect."""
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            yield

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    @property
    def batch_sharding(self) -> NamedSharding:
        """Leading (batch) dimension over data x fsdp; everything else whole."""
        return NamedSharding(self.mesh, PartitionSpec(BATCH_AXES))

    def param_shardings(self, logical_axes: Any, rules: Rules | None = None) -> Shardings:
        return nn.logical_to_mesh_sharding(logical_axes, self.mesh, self.rules if rules is None else rules)

    def state_shardings(self, optimizer: optax.GradientTransformation, abstract_params: Any,
                        logical_axes: Any) -> dict[str, Shardings]:
        """Shardings for the train state {step, params, opt_state, rng}.

        Optimizer moments mirror the params, so each takes its param's logical
        axes (under `opt_rules`, which differ from the param rules for zero1);
        scalars such as Adam's step count are replicated.
        """
        params = self.param_shardings(logical_axes)
        check_divisible(abstract_params, params)
        moments = self.param_shardings(logical_axes, self.opt_rules)
        check_divisible(abstract_params, moments)
        abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
        opt = optax.tree_map_params(
            optimizer, lambda _, sharding: sharding, abstract_opt, moments,
            transform_non_params=lambda _: self.replicated,
            is_leaf=lambda x: isinstance(x, NamedSharding))
        return {"step": self.replicated, "params": params, "opt_state": opt, "rng": self.replicated}

    def shard_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """The global batch (identical on every host) -> global arrays split over data x fsdp.

        Every host runs the same seeded pipeline, so each takes its own contiguous
        block of rows. (Reading only those rows would save host work; not built yet.
        Multi-host placement is untested here: CI has one host.)
        """
        sharding = self.batch_sharding
        if jax.process_count() == 1:
            return jax.device_put(batch, sharding)
        out = {}
        for key, value in batch.items():
            rows = value.shape[0] // jax.process_count()
            local = value[jax.process_index() * rows:(jax.process_index() + 1) * rows]
            out[key] = jax.make_array_from_process_local_data(sharding, local, value.shape)
        return out


def check_divisible(abstract_params: Any, shardings: Shardings) -> None:
    """Every sharded dimension must split evenly; name the param that does not."""
    for (path, leaf), sharding in zip(jax.tree_util.tree_leaves_with_path(abstract_params),
                                      jax.tree_util.tree_leaves(shardings)):
        mesh_shape = dict(sharding.mesh.shape)
        for dim, (size, axes) in enumerate(zip(leaf.shape, sharding.spec)):
            if axes is None:
                continue
            parts = math.prod(mesh_shape[a] for a in ((axes,) if isinstance(axes, str) else axes))
            if size % parts:
                raise ValueError(f"param {jax.tree_util.keystr(path)} dim {dim} of size {size} cannot be "
                                 f"split over mesh axes {axes} ({parts} devices); change the mesh or "
                                 f"the logical rules")


def parallel_from_config(pc) -> Parallel:
    """`config.parallel` -> Parallel (initialising jax.distributed first when configured)."""
    maybe_initialize_distributed(pc.coordinator_address, pc.num_processes, pc.process_id)
    mesh = make_mesh(pc.data, pc.fsdp, pc.tensor)
    return Parallel.create(mesh, pc.preset, pc.rules)
