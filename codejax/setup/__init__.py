"""Model set-up shared by the jobs: tokenizer, ModelConfig, params in their shardings, PEFT, the reference, export.

Jobs compose these; no job imports another job.
"""
from codejax.setup.export import export_trained, finish
from codejax.setup.model import (TrainableModel, add_reference_copy, build_params, build_trainable, load_model,
                                 load_tokenizer, model_config, with_run_config)
from codejax.setup.peft import prepare_peft, resolve_spec

__all__ = ["TrainableModel", "add_reference_copy", "build_params", "build_trainable", "export_trained", "finish",
           "load_model", "load_tokenizer", "model_config", "prepare_peft", "resolve_spec", "with_run_config"]
