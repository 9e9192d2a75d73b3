"""Parameter-efficient fine-tuning: LoRA, QLoRA, DoRA, prefix and prompt tuning, adapters, (IA)3.

    from codejax.peft import PeftSpec, init_adapters
    model = Transformer(cfg, peft=PeftSpec("lora", rank=16, target_modules=("q_proj", "v_proj")))
    adapters = init_adapters(model, base_params, rng)         # {"lora": ...}
    logits = model.apply({"params": base_params, **adapters}, tokens)
    logits_base = model.apply({"params": base_params}, tokens)   # adapters switched off

`PeftSpec` and the in-model layers live in codejax/models/adapters.py (the model
needs them, and codejax.models imports nothing above it); this package holds
what acts on a model's variables: init, QLoRA quantisation, merge, the HF PEFT
format, and the method table (methods.py).
"""
from codejax.models.adapters import METHODS, PeftSpec, spec_from_config
from codejax.peft.api import (adapter_axes, count_params, dequantize_base, init_adapters, merge, quantize_base,
                              quantized_axes, unmerge)
from codejax.peft.hf_peft import load_hf_adapter, save_hf_adapter
from codejax.peft.methods import EXPORTABLE, MERGEABLE, PEFT_METHODS, PeftMethod, get_method

__all__ = [
    "EXPORTABLE", "MERGEABLE", "METHODS", "PEFT_METHODS", "PeftMethod", "PeftSpec", "adapter_axes", "count_params",
    "dequantize_base", "get_method", "init_adapters", "load_hf_adapter", "merge", "quantize_base",
    "quantized_axes", "save_hf_adapter", "spec_from_config", "unmerge",
]
