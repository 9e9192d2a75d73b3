"""Parameter-efficient fine-tuning: LoRA, QLoRA, DoRA, prefix and prompt tuning, adapters, (IA)3.

    from codejax.peft import PeftSpec, init_adapters
    model = Transformer(cfg, peft=PeftSpec("lora", rank=16, target_modules=("q_proj", "v_proj")))
    adapters = init_adapters(model, base_params, rng)         # {"lora": ...}
    logits = model.apply({"params": base_params, **adapters}, tokens)
    logits_base = model.apply({"params": base_params}, tokens)   # adapters switched off

The model code imports `spec` and `nf4` from here, so everything that imports
the model is loaded lazily (PEP 562) to keep the import graph acyclic.
"""
import importlib

from codejax.peft.spec import METHODS, PeftSpec, spec_from_config

_LAZY = {
    "init_adapters": "codejax.peft.api", "adapter_axes": "codejax.peft.api", "quantize_base": "codejax.peft.api",
    "dequantize_base": "codejax.peft.api", "merge": "codejax.peft.api", "unmerge": "codejax.peft.api",
    "count_params": "codejax.peft.api", "save_hf_adapter": "codejax.peft.hf_peft",
    "load_hf_adapter": "codejax.peft.hf_peft",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'codejax.peft' has no attribute {name!r}")


__all__ = ["METHODS", "PeftSpec", "spec_from_config", *_LAZY]
