"""Sharding over devices and hosts: mesh, logical axis rules, placement helpers.

JAX's SPMD partitioner is the distributed engine: we only annotate params,
batches and activations with shardings; no communication is written by hand.
"""
from codejax.parallel.mesh import MESH_AXES, make_mesh, maybe_initialize_distributed, resolve_axis_sizes
from codejax.parallel.rules import PRESETS, logical_rules, optimizer_rules
from codejax.parallel.sharding import Parallel, check_divisible, parallel_from_config

__all__ = ["MESH_AXES", "PRESETS", "Parallel", "check_divisible", "logical_rules", "make_mesh",
           "maybe_initialize_distributed", "optimizer_rules", "parallel_from_config", "resolve_axis_sizes"]
