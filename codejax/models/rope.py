"""Rotary position embeddings and their context-extension variants.

Frequencies are computed once in numpy (they depend only on the config) and
the rotation is applied in float32. We use the "rotate half" layout of the
Hugging Face checkpoints: the first and second halves of each head form the
(x, y) pairs, so HF q/k weights load without any permutation.

Formulas:
  default:  inv_freq_i = theta^(-2i/d)
  linear:   inv_freq_i / factor                      (position interpolation)
  llama3:   wavelengths longer than L/low_freq_factor are divided by factor,
            shorter than L/high_freq_factor kept, and a linear blend between
            (L = original_max_position_embeddings)
  yarn:     per-dimension blend of interpolated and extrapolated frequencies
            with a linear ramp between the beta_fast/beta_slow correction
            dimensions, and cos/sin scaled by 0.1*ln(factor)+1 (Peng et al. 2023)
"""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from codejax.models.config import ModelConfig


def rope_frequencies(cfg: ModelConfig) -> tuple[np.ndarray, float]:
    """Inverse frequencies [head_dim // 2] and the cos/sin scale for `cfg`."""
    dim = cfg.head_dim
    base = cfg.rope_theta
    inv_freq = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    rope = cfg.rope_scaling_dict
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type == "default":
        return inv_freq.astype(np.float32), 1.0
    if rope_type == "linear":
        return (inv_freq / rope["factor"]).astype(np.float32), 1.0
    if rope_type == "llama3":
        return _llama3_frequencies(inv_freq, rope, cfg).astype(np.float32), 1.0
    if rope_type == "yarn":
        return _yarn_frequencies(dim, base, rope, cfg)
    raise ValueError(f"unsupported rope_type {rope_type!r}")


def _llama3_frequencies(inv_freq: np.ndarray, rope: dict, cfg: ModelConfig) -> np.ndarray:
    factor = rope["factor"]
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_len = rope.get("original_max_position_embeddings", cfg.max_position_embeddings)
    wavelen = 2 * math.pi / inv_freq
    # Long wavelengths (low frequencies) are interpolated, short ones untouched.
    scaled = np.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return np.where(medium, blended, scaled)


def _yarn_frequencies(dim: int, base: float, rope: dict, cfg: ModelConfig) -> tuple[np.ndarray, float]:
    old_len = rope.get("original_max_position_embeddings", cfg.max_position_embeddings)
    factor = rope.get("factor") or cfg.max_position_embeddings / old_len

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = rope.get("attention_factor")
    if attention_factor is None:
        if rope.get("mscale") and rope.get("mscale_all_dim"):
            attention_factor = mscale(factor, rope["mscale"]) / mscale(factor, rope["mscale_all_dim"])
        else:
            attention_factor = mscale(factor)
    beta_fast = rope.get("beta_fast") or 32
    beta_slow = rope.get("beta_slow") or 1

    def correction_dim(num_rotations):
        # The dimension whose wavelength completes `num_rotations` turns over old_len.
        return dim * math.log(old_len / (num_rotations * 2 * math.pi)) / (2 * math.log(base))

    lo, hi = correction_dim(beta_fast), correction_dim(beta_slow)
    if rope.get("truncate", True):
        lo, hi = math.floor(lo), math.ceil(hi)
    lo, hi = max(lo, 0), min(hi, dim - 1)
    if lo == hi:
        hi += 0.001  # avoid a zero-width ramp
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - lo) / (hi - lo), 0, 1)
    pos_freqs = base ** (np.arange(0, dim, 2, dtype=np.float32) / dim)
    extrapolated, interpolated = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
    keep = 1 - ramp  # weight of the extrapolated (unscaled) frequency
    inv_freq = interpolated * (1 - keep) + extrapolated * keep
    return inv_freq.astype(np.float32), float(attention_factor)


def rope_cos_sin(cfg: ModelConfig, positions: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """cos and sin tables [..., seq, head_dim // 2] in float32 for integer positions."""
    inv_freq, scale = rope_frequencies(cfg)
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)
    return jnp.cos(angles) * scale, jnp.sin(angles) * scale


def apply_rope(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray) -> jnp.ndarray:
    """Rotate x [batch, seq, heads, head_dim] by cos/sin [batch, seq, head_dim // 2]."""
    dtype = x.dtype
    x = x.astype(jnp.float32)
    x1, x2 = jnp.split(x, 2, axis=-1)
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]  # broadcast over heads
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return rotated.astype(dtype)
