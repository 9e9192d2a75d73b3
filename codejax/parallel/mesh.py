"""The device mesh ('data', 'fsdp', 'tensor') and multi-host start-up."""
from __future__ import annotations

import logging
import math
import os
from typing import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")


def resolve_axis_sizes(sizes: Sequence[int], num_devices: int) -> tuple[int, ...]:
    """Replace one -1 by "the rest of the devices" and check the product."""
    sizes = [int(s) for s in sizes]
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh sizes {sizes}: at most one axis may be -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(f"mesh sizes {sizes} do not divide {num_devices} devices")
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices; "
                         f"there are {num_devices}")
    return tuple(sizes)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices=None) -> Mesh:
    """A mesh over `devices` (default: all) with axes ('data', 'fsdp', 'tensor').

    'tensor' is the innermost axis, so tensor-parallel groups sit on devices that
    are neighbours in jax's device order (the fastest interconnect).
    Axis types are Auto: XLA's partitioner propagates shardings from the
    annotations we give (params, batch, activation constraints).
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = resolve_axis_sizes((data, fsdp, tensor), len(devices))
    if devices == list(jax.devices()):
        return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3)
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def maybe_initialize_distributed(coordinator_address: str = "", num_processes: int = 0,
                                 process_id: int = -1) -> bool:
    """Call jax.distributed.initialize for multi-host runs; True if it was called.

    Explicit settings win; otherwise JAX's own cluster detection (Cloud TPU,
    SLURM, ...) runs when CODEJAX_DISTRIBUTED=1 or a coordinator address is in
    the environment. A single-host run calls nothing.
    """
    env_address = os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    if not (coordinator_address or env_address or os.environ.get("CODEJAX_DISTRIBUTED") == "1"):
        return False
    kwargs = {}
    if coordinator_address:
        kwargs.update(coordinator_address=coordinator_address, num_processes=num_processes or None,
                      process_id=None if process_id < 0 else process_id)
    jax.distributed.initialize(**kwargs)
    log.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
             jax.process_count(), jax.local_device_count(), jax.device_count())
    return True
