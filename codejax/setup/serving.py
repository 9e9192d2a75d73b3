"""Load a model to serve: an HF model directory or a training workdir, plus named PEFT adapters on it.

    served = load_served("/models/qwen2.5-coder-1.5b", {"sql": "/runs/sql_lora"})
    model, variables = served.models["sql"]          # also served.models[served.base_name]
    prompt = served.chat_prompt([{"role": "user", "content": "Write fizzbuzz."}])
    generate(model, variables, served.tokenizer, [prompt], SamplingParams(...))

Used by `python -m codejax.serve` and by the synthetic-data job's local backend.

The base (`model_path`):
- an HF model directory (config.json, weights, tokenizer files: codejax's HF export or
  transformers' save_pretrained), loaded as `model.hf_path`;
- a codejax training workdir (its checkpoints/ folder or one step folder): its latest checkpoint,
  rebuilt from the run's config.json the way the eval job does for eval.checkpoint_dir
  (`find_checkpoint` + `with_run_config` + `load_model`). A PEFT run serves its adapter on its base.

Each adapter (`adapters`, name -> path) is
- an HF PEFT adapter directory (adapter_config.json), or
- a codejax PEFT training workdir (its latest checkpoint; its config.json's peft section says the method).
Adapters share the base's weights in memory (one copy of the base for any number of adapters),
except a QLoRA run's: its adapter was trained against the NF4-quantised base, so it gets its own
quantised copy of the base (load_model, once per such adapter). An adapter is always applied to
the served base, whatever base its run named; its tokenizer must be the base's.

`config` supplies the sections the loaders read (parallel, model switches such as dtype); callers
that have the full config pass it (`codejax.config.base_config()` from the command line). Without
one, `default_config()` gives the same defaults: setup sits below codejax/config.py in the import
graph, so it cannot call base_config itself (tests/test_serve.py checks the two agree).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

import ml_collections

from codejax.models import Transformer, count_leaves, logical_axes
from codejax.models.adapters import config_fields as peft_fields
from codejax.parallel import parallel_from_config
from codejax.peft.hf_peft import ADAPTER_CONFIG, load_hf_adapter
from codejax.setup.model import load_model, load_tokenizer, with_run_config
from codejax.setup.peft import prepare_peft, resolve_spec
from codejax.train.checkpoint import find_checkpoint, restore_params

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Served:
    """What a server generates with: one tokenizer, and a (model, variables) pair per served name."""

    tokenizer: Any
    models: dict[str, tuple[Transformer, dict]]  # base_name first, then the adapters in the order given
    base_name: str
    hf_path: str  # the base's HF directory ('' for a randomly initialised run's base); eos_ids reads it
    max_len: int  # the base's max_position_embeddings: prompt + completion tokens must fit
    info: dict[str, dict] = dataclasses.field(default_factory=dict)  # per name: what was loaded from where

    @property
    def names(self) -> list[str]:
        return list(self.models)

    def chat_prompt(self, messages: list[dict]) -> str:
        """The prompt text for chat `messages` ({role, content} dicts), ready for the assistant's turn."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(f"the tokenizer of {self.base_name!r} has no chat template; send a plain prompt "
                             "to /v1/completions instead")
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def default_config() -> ml_collections.ConfigDict:
    """The config sections the loaders read, at codejax.config.base_config()'s defaults."""
    return ml_collections.ConfigDict(dict(
        model=dict(hf_path="", preset="", family="llama", vocab_size=0, hidden_size=256, intermediate_size=768,
                   num_layers=4, num_heads=4, num_kv_heads=2, head_dim=0, max_position_embeddings=2048,
                   tie_embeddings=False, rope_theta=10000.0, dtype="float32", param_dtype="float32",
                   scan_layers=True, remat_policy="none"),
        tokenizer=dict(path=""),
        peft=dict(**peft_fields(), prompt_init_text="", adapter_path="", export_adapter=True),
        parallel=dict(preset="fsdp", data=1, fsdp=-1, tensor=1, rules="", coordinator_address="",
                      num_processes=0, process_id=-1),
        train=dict(export_hf=False),
        seed=0,
    ))


def is_run_dir(path: str) -> bool:
    """A codejax training workdir, its checkpoints/ folder or one step folder (rather than an HF directory)."""
    if os.path.isdir(os.path.join(path, "checkpoints")) or os.path.basename(os.path.normpath(path)) == "checkpoints":
        return True
    if os.path.isdir(os.path.join(path, "state")):  # one step folder
        return True
    # A run that has not checkpointed yet still has its config.json, whose sections HF's lacks;
    # find_checkpoint then says there is no step, instead of HF's reader failing on a foreign file.
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and isinstance(config.get("model"), dict) and "model_type" not in config


def served_name(path: str) -> str:
    """The default name of a served model: the last component of its path."""
    return os.path.basename(os.path.normpath(os.path.abspath(path)))


def _check_dir(path: str, what: str) -> None:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} {path!r} is not a directory")


def _base_config(config, model_path: str, dtype: str):
    """(config describing the base, its checkpoint step dir or None)."""
    config = config.copy_and_resolve_references()
    step_dir = None
    if is_run_dir(model_path):
        step_dir, step, run_dir = find_checkpoint(model_path, "model path")
        config = with_run_config(config, run_dir)
        log.info("serving step %d of %s", step, run_dir)
    else:
        config.model.hf_path = os.path.abspath(model_path)
        config.peft.method = "none"  # the HF directory is a plain model; adapters come separately
        config.peft.adapter_path = ""
    if dtype:
        config.model.dtype = dtype
    return config, step_dir


def _dense_base(name: str, model: Transformer, variables: dict) -> dict:
    """The base's params, for adapters to sit on; a PEFT run as the base has no adapter-free weights to share."""
    if model.peft is not None and model.peft.enabled:
        raise ValueError(f"adapters need a plain base model, but {name!r} is a {model.peft.method} run; serve it "
                         f"as an adapter instead (the HF base as the model, the run as NAME=PATH)")
    return variables["params"]


def _hf_adapter(config, cfg, par, base: dict, path: str) -> tuple[Transformer, dict, dict]:
    spec, adapters = load_hf_adapter(path, cfg)
    model, variables, _ = prepare_peft(config, spec, cfg, base, logical_axes(cfg), par, adapters)
    return model, {**variables.frozen, **variables.trainable}, {"peft": spec.method, "path": path}


def _run_adapter(config, cfg, par, base: dict, tokenizer, path: str) -> tuple[Transformer, dict, dict]:
    step_dir, step, run_dir = find_checkpoint(path, "adapter path")
    run_config = with_run_config(config, run_dir)  # config's model.hf_path (the served base) wins
    spec, loaded = resolve_spec(run_config, cfg, tokenizer)
    if not spec.enabled:
        raise ValueError(f"adapter {path!r} is a full fine-tuning run (peft.method=none); serve it as a model "
                         "of its own")
    info = {"peft": spec.method, "path": run_dir, "step": step}
    if spec.layout.nf4_base:  # trained on the quantised base: it gets its own NF4 copy of the base
        run_config.model.dtype = cfg.dtype  # the served compute dtype, not the run's
        model, variables, _ = load_model(run_config, tokenizer, step_dir)
        return model, variables, info
    model, mv, _ = prepare_peft(run_config, spec, cfg, base, logical_axes(cfg), par, loaded)
    return model, {**mv.frozen, **restore_params(step_dir, mv.trainable)}, info


def load_served(model_path: str, adapters: dict[str, str] | None = None, *, dtype: str = "", config=None,
                base_name: str = "") -> Served:
    """Load the base at `model_path` and each adapter (name -> path) on it. See the module docstring.

    dtype: compute dtype ('bfloat16', ...; '' = the config's, float32 by default).
    base_name: the base's served name ('' = the last component of model_path).
    """
    _check_dir(model_path, "model path")
    base_name = base_name or served_name(model_path)
    adapters = dict(adapters or {})
    for name, path in adapters.items():
        if not name or name == base_name:
            raise ValueError(f"adapter name {name!r} must be non-empty and differ from the base's "
                             f"name {base_name!r}")
        _check_dir(path, f"adapter {name!r} path")
    config, step_dir = _base_config(config if config is not None else default_config(), model_path, dtype)
    tokenizer = load_tokenizer(config)
    model, variables, info = load_model(config, tokenizer, step_dir)
    models = {base_name: (model, variables)}
    infos = {base_name: {**info, "path": os.path.abspath(model_path), **({"checkpoint": step_dir} if step_dir else {})}}
    if adapters:
        base = _dense_base(base_name, model, variables)
        par, cfg = parallel_from_config(config.parallel), model.cfg
        for name, path in adapters.items():
            if os.path.exists(os.path.join(path, ADAPTER_CONFIG)):
                loaded = _hf_adapter(config, cfg, par, base, path)
            elif is_run_dir(path):
                loaded = _run_adapter(config, cfg, par, base, tokenizer, path)
            else:
                raise FileNotFoundError(f"adapter {name!r}: {path!r} has no {ADAPTER_CONFIG} and is not a codejax "
                                        "training workdir; give an HF PEFT adapter directory or a PEFT run")
            adapter_model, adapter_variables, adapter_info = loaded
            models[name] = (adapter_model, adapter_variables)
            adapter_count = count_leaves({k: v for k, v in adapter_variables.items() if k != "params"})
            infos[name] = {**adapter_info, "parent": base_name, "adapter_params": adapter_count}
            log.info("adapter %s: %s from %s", name, adapter_info["peft"], path)
    return Served(tokenizer, models, base_name, config.model.hf_path, int(model.cfg.max_position_embeddings), infos)
