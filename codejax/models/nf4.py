"""4-bit NormalFloat (NF4) storage with double-quantised block constants, as in QLoRA.

A weight is flattened and cut into blocks of 64. Each block is divided by its
absolute maximum and every value is replaced by the nearest of the 16 NF4 levels
(the bitsandbytes codebook: quantiles of a standard normal, with an exact 0).
Two 4-bit codes share a byte. The per-block absmax constants are themselves
quantised (double quantisation): their mean is subtracted and the rest is
stored as int8 in blocks of 256 with one float32 scale per block. Storage is
4 + 8/64 + 32/(64*256) bits per weight, about 4.127.

All functions are jnp, so quantising runs on device and composes with vmap
(stacked layers) and jit. Dequantisation happens inside the forward pass, into
the compute dtype; nothing keeps a full-precision copy.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

# bitsandbytes' NF4 levels (create_normal_map(offset=0.9677083, use_extra_value=True)).
NF4_CODEBOOK = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0], np.float32)
BLOCK = 64  # weights per absmax constant
ABSMAX_BLOCK = 256  # absmax constants per float32 scale (double quantisation)
FIELDS = ("codes", "absmax", "absmax_scale", "absmax_offset")


def _pad_to(x: jnp.ndarray, multiple: int) -> jnp.ndarray:
    pad = (-x.shape[0]) % multiple
    return jnp.pad(x, (0, pad)) if pad else x


def quantize(w: jnp.ndarray) -> dict[str, jnp.ndarray]:
    """NF4-quantise `w` (any shape). Returns {codes uint8 [nb, 32], absmax int8 [nb],
    absmax_scale float32 [ceil(nb/256)], absmax_offset float32 []}; nb = ceil(w.size / 64)."""
    flat = _pad_to(jnp.ravel(w).astype(jnp.float32), BLOCK).reshape(-1, BLOCK)
    absmax = jnp.max(jnp.abs(flat), axis=1)
    normed = flat / jnp.where(absmax == 0, 1.0, absmax)[:, None]
    # Nearest level: the codebook is sorted, so count the midpoints below each value.
    midpoints = jnp.asarray((NF4_CODEBOOK[1:] + NF4_CODEBOOK[:-1]) / 2)
    codes = jnp.sum(normed[..., None] > midpoints, axis=-1).astype(jnp.uint8)
    packed = (codes[:, 0::2] << 4) | codes[:, 1::2]  # first value in the high nibble
    absmax_q, scale, offset = _quantize_absmax(absmax)
    return {"codes": packed, "absmax": absmax_q, "absmax_scale": scale, "absmax_offset": offset}


def _quantize_absmax(absmax: jnp.ndarray):
    offset = jnp.mean(absmax)
    centred = _pad_to(absmax - offset, ABSMAX_BLOCK).reshape(-1, ABSMAX_BLOCK)
    scale = jnp.max(jnp.abs(centred), axis=1)
    q = jnp.round(centred / jnp.where(scale == 0, 1.0, scale)[:, None] * 127.0)
    return q.reshape(-1)[: absmax.shape[0]].astype(jnp.int8), scale, offset


def _dequantize_absmax(absmax_q, scale, offset) -> jnp.ndarray:
    n = absmax_q.shape[0]
    q = _pad_to(absmax_q.astype(jnp.float32), ABSMAX_BLOCK).reshape(-1, ABSMAX_BLOCK)
    return (q / 127.0 * scale[:, None]).reshape(-1)[:n] + offset


def dequantize(q: dict[str, jnp.ndarray], shape: tuple[int, ...], dtype=jnp.float32) -> jnp.ndarray:
    """The weight of `shape` back from `quantize`'s output, in `dtype`."""
    packed = q["codes"]
    codes = jnp.stack([packed >> 4, packed & 0x0F], axis=-1).reshape(packed.shape[0], BLOCK)
    absmax = _dequantize_absmax(q["absmax"], q["absmax_scale"], q["absmax_offset"])
    values = jnp.asarray(NF4_CODEBOOK)[codes] * absmax[:, None]
    return values.reshape(-1)[: math.prod(shape)].reshape(shape).astype(dtype)


def storage_bits(q: dict[str, jnp.ndarray]) -> int:
    """Bits used by one quantised tensor (all four fields)."""
    return sum(int(np.prod(q[f].shape)) * jnp.dtype(q[f].dtype).itemsize * 8 for f in FIELDS)


def abstract_quantized(shape: tuple[int, ...]) -> dict[str, jax.ShapeDtypeStruct]:
    """Shapes and dtypes `quantize` returns for a weight of `shape`, without computing it."""
    return jax.eval_shape(quantize, jax.ShapeDtypeStruct(shape, jnp.float32))
