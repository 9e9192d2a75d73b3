"""Set up a PEFT run: the spec (or a loaded HF PEFT adapter), the frozen base, the adapters in their shardings.

`prepare_peft` runs after the base params are built; it returns the PEFT model and its
`ModelVariables` (trainable = the adapter collection, frozen = {"params": base}). DPO, PPO
and GRPO get the reference model for free: the same model applied without the adapter
collection (`codejax.objectives.variables.reference_view`).
"""
from __future__ import annotations

import dataclasses
import logging
import warnings
from typing import Any

import jax

from codejax.models import Transformer
from codejax.models.adapters import PeftSpec, spec_from_config
from codejax.models.config import ModelConfig
from codejax.objectives.variables import ModelVariables
from codejax.parallel import Parallel
from codejax.peft.api import adapter_axes, count_params, init_adapters, quantize_base, quantized_axes
from codejax.peft.hf_peft import load_hf_adapter
from codejax.peft.methods import MERGEABLE, PEFT_METHODS

log = logging.getLogger(__name__)


def resolve_spec(config, cfg: ModelConfig, tokenizer=None) -> tuple[PeftSpec, dict | None]:
    """The PeftSpec from config.peft; with peft.adapter_path, the spec and adapters stored there.

    Checked before any training, so a bad combination fails in seconds.
    """
    spec, adapters = spec_from_config(config.peft, tokenizer), None
    if config.peft.adapter_path:
        loaded, adapters = load_hf_adapter(config.peft.adapter_path, cfg)
        if spec.layout == dataclasses.replace(loaded.layout, nf4_base=True):  # QLoRA is LoRA on an NF4 base
            loaded = dataclasses.replace(loaded, method=spec.method)
        elif spec.enabled and spec.method != loaded.method:
            raise ValueError(f"peft.method={spec.method!r} but {config.peft.adapter_path} holds a "
                             f"{loaded.method!r} adapter")
        spec = loaded
    if config.train.export_hf and spec.enabled and not PEFT_METHODS[spec.method].mergeable:
        raise ValueError(f"train.export_hf writes a merged model, and peft.method={spec.method!r} cannot be "
                         f"merged ({MERGEABLE} can); use peft.export_adapter instead")
    return spec, adapters


def prepare_peft(config, spec: PeftSpec, cfg: ModelConfig, base: Any, base_axes: Any, par: Parallel,
                 adapters: dict | None = None) -> tuple[Transformer, ModelVariables, dict]:
    """Quantise the base for QLoRA, then create the adapters (or place the given ones) in their shardings.

    Returns (the PEFT model, its variables, parameter-count stats)."""
    model = Transformer(cfg, peft=spec)
    total_base = count_params(base)
    if spec.layout.nf4_base:
        base_axes = quantized_axes(base_axes)
        # Donated so the dense base is freed even while callers still hold a reference to it. Its
        # buffers cannot hold the NF4 outputs (other shapes), hence JAX's warning, which says nothing here.
        with par.context(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Some donated buffers were not usable")
            base = jax.jit(quantize_base, out_shardings=par.param_shardings(base_axes), donate_argnums=0)(base)
    axes = adapter_axes(model, base)
    shardings = par.param_shardings(axes)
    if adapters is not None:
        adapters = jax.device_put(adapters, shardings)
    else:
        rng = jax.random.PRNGKey(config.seed + 1)
        with par.context():
            adapters = jax.jit(lambda b: init_adapters(model, b, rng), out_shardings=shardings)(base)
    trainable = count_params(adapters)
    stats = {"method": spec.method, "trainable_params": trainable, "base_params": total_base,
             "trainable_percent": 100.0 * trainable / (total_base + trainable)}
    log.info("peft %s: trainable params %s || base params %s || trainable %.4f%%", spec.method,
             f"{trainable:,}", f"{total_base:,}", stats["trainable_percent"])
    return model, ModelVariables(adapters, axes, {"params": base}, {"params": base_axes}), stats
