"""Decoder-only transformers for code LLM families, with Hugging Face interop.

    from codejax.models import load_hf
    model, params = load_hf("/path/to/hf_model_dir")
    logits = model.apply({"params": params}, tokens)
"""
from codejax.models.config import (FAMILIES, PRESETS, ModelConfig, family_config, preset_config,
                                   tiny_config)
from codejax.models.counting import flops_per_token, param_counts
from codejax.models.hf import (config_from_hf, config_to_hf, load_hf, load_hf_params, read_hf_config,
                               save_hf)
from codejax.models.params import (abstract_params, count_leaves, init_params, logical_axes,
                                   stack_layers, unstack_layers)
from codejax.models.transformer import Transformer, attention_mask

__all__ = [
    "FAMILIES", "PRESETS", "ModelConfig", "Transformer", "abstract_params", "attention_mask",
    "config_from_hf", "config_to_hf", "count_leaves", "family_config", "flops_per_token",
    "init_params", "load_hf", "load_hf_params", "logical_axes", "param_counts", "preset_config",
    "read_hf_config", "save_hf", "stack_layers", "tiny_config", "unstack_layers",
]
