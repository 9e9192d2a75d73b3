"""Model set-up shared by every job: tokenizer, ModelConfig, params in their shardings, the trainable variables.

    tokenizer = load_tokenizer(config)
    tm = build_trainable(config, tokenizer, parallel_from_config(config.parallel))
    tm.model, tm.variables           # the Transformer (with its PEFT spec) and its ModelVariables

Full fine-tuning trains {"params": weights}; with config.peft the base is frozen and only the
method's collection trains (codejax/setup/peft.py). `add_reference_copy` gives a full
fine-tuning run the frozen copy of its initial weights that DPO's and RL's KL term compare
against (a PEFT run's reference is its base with the adapters off, at no cost).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os

import jax
import jax.numpy as jnp
import transformers

from codejax.data.builtin import BUILTIN, resolve_tokenizer_path
from codejax.models import (ModelConfig, Transformer, abstract_params, count_leaves, family_config, init_params,
                            load_hf_params, logical_axes, preset_config, read_hf_config, tiny_config)
from codejax.objectives.variables import REF, ModelVariables
from codejax.parallel import Parallel, check_divisible, parallel_from_config
from codejax.setup.peft import prepare_peft, resolve_spec
from codejax.train.checkpoint import restore_params

log = logging.getLogger(__name__)


def check_local_dir(path: str, field: str, needs: tuple[str, ...]) -> None:
    """One line naming the field when a model or tokenizer path is not a local directory with its files.
    (codejax never downloads: a hub id would only make transformers retry the network.)"""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{field}={path!r} is not a local directory; codejax loads models and tokenizers "
                                "from local folders only (download once, e.g. `huggingface-cli download`, and "
                                "pass the folder)")
    if not any(os.path.exists(os.path.join(path, n)) for n in needs):
        raise FileNotFoundError(f"{field}={path!r} has none of {', '.join(needs)}: it is not a Hugging Face "
                                "model/tokenizer directory")


def load_tokenizer(config):
    """tokenizer.path, else model.hf_path's tokenizer; 'builtin' is codejax's stdlib tokenizer
    (codejax/data/builtin.py), which the `:tiny` variants use."""
    path = resolve_tokenizer_path(config)
    if not path:
        raise ValueError("set tokenizer.path (a local HF tokenizer directory) or model.hf_path "
                         "(or tokenizer.path=builtin for codejax's small stdlib tokenizer)")
    field = "tokenizer.path" if config.tokenizer.path not in ("", BUILTIN) else "model.hf_path"
    check_local_dir(path, field, ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model"))
    return transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)


def model_config(config, tokenizer) -> ModelConfig:
    """The ModelConfig: from model.hf_path's config.json, or built from the config fields."""
    mc = config.model
    switches = dict(dtype=mc.dtype, param_dtype=mc.param_dtype, scan_layers=mc.scan_layers,
                    remat_policy=mc.remat_policy)
    if mc.hf_path:  # the checkpoint's config.json decides the shape; the size fields are ignored
        check_local_dir(mc.hf_path, "model.hf_path", ("config.json",))
        cfg = read_hf_config(mc.hf_path, **switches)
        if cfg.vocab_size < len(tokenizer):
            raise ValueError(f"{mc.hf_path}: vocab_size={cfg.vocab_size} is smaller than the tokenizer "
                             f"({len(tokenizer)} tokens); ids past the embedding would be out of range")
        return cfg
    special = dict(vocab_size=mc.vocab_size or len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
    if mc.preset == "tiny":
        cfg = tiny_config(mc.family, **special, **switches)
    elif mc.preset:
        cfg = preset_config(mc.preset, **special, **switches)
    else:
        cfg = family_config(
            mc.family, hidden_size=mc.hidden_size, intermediate_size=mc.intermediate_size,
            num_layers=mc.num_layers, num_heads=mc.num_heads, num_kv_heads=mc.num_kv_heads,
            head_dim=mc.head_dim or None, max_position_embeddings=mc.max_position_embeddings,
            tie_embeddings=mc.tie_embeddings, rope_theta=mc.rope_theta, **special, **switches)
    if cfg.vocab_size < len(tokenizer):
        raise ValueError(f"model.vocab_size={cfg.vocab_size} is smaller than the tokenizer ({len(tokenizer)})")
    return cfg


def param_shardings(cfg: ModelConfig, par: Parallel):
    return par.param_shardings(logical_axes(cfg))


def build_params(config, cfg: ModelConfig, par: Parallel):
    """Params created or loaded straight into their shardings: never whole on one device."""
    shardings = param_shardings(cfg, par)
    check_divisible(abstract_params(cfg), shardings)
    if config.model.hf_path:
        by_path = {tuple(k.key for k in path): s for path, s in jax.tree_util.tree_leaves_with_path(
            shardings, is_leaf=lambda x: isinstance(x, jax.sharding.NamedSharding))}
        return load_hf_params(config.model.hf_path, cfg, place=lambda path, a: jax.device_put(a, by_path[path]))
    with par.context():
        return jax.jit(lambda: init_params(cfg, jax.random.PRNGKey(config.seed)), out_shardings=shardings)()


@dataclasses.dataclass
class TrainableModel:
    """The model a job trains: full fine-tuning, or a PEFT adapter on a frozen base."""

    model: Transformer
    variables: ModelVariables
    num_params: int  # of the (dense) base model
    peft_stats: dict | None = None  # trainable / base parameter counts; None for full fine-tuning

    @property
    def is_peft(self) -> bool:
        return self.peft_stats is not None

    def facts(self) -> dict:
        """The model's lines of a job summary."""
        out = {"model": {"family": self.model.cfg.family, "params": self.num_params}}
        if self.is_peft:
            out["peft"] = self.peft_stats
        return out


def build_trainable(config, tokenizer, par: Parallel) -> TrainableModel:
    """Model config, params (created or loaded in their shardings), and PEFT set-up from config.peft."""
    cfg = model_config(config, tokenizer)
    spec, loaded_adapters = resolve_spec(config, cfg, tokenizer)  # fails fast on a bad PEFT config
    params = build_params(config, cfg, par)
    n_params = count_leaves(params)  # before QLoRA's quantisation consumes the dense base
    if not spec.enabled:  # full fine-tuning: every weight trains
        return TrainableModel(Transformer(cfg), ModelVariables({"params": params}, {"params": logical_axes(cfg)}),
                              n_params)
    # The base is frozen; only the adapter trains and is checkpointed.
    model, variables, stats = prepare_peft(config, spec, cfg, params, logical_axes(cfg), par, loaded_adapters)
    return TrainableModel(model, variables, n_params, stats)


def add_reference_copy(tm: TrainableModel, par: Parallel) -> TrainableModel:
    """Full fine-tuning: freeze a copy of the initial weights as the reference model (`REF`).
    With PEFT nothing is added: the reference is the base with the adapters off."""
    if tm.is_peft:
        return tm
    axes = tm.variables.trainable_axes["params"]
    with par.context():
        ref = jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=par.param_shardings(axes))(
            tm.variables.trainable["params"])
    return dataclasses.replace(tm, variables=tm.variables.with_frozen(REF, ref, axes))


# ----------------------------------------------------------------------------- a trained run's model

_RUN_SECTIONS = ("model", "tokenizer", "peft")
_OVERRIDABLE_PATHS = (("model", "hf_path"), ("tokenizer", "path"))


def with_run_config(config, run_dir: str):
    """A copy of `config` whose model, tokenizer, peft and seed come from the run's config.json.

    A non-empty model.hf_path or tokenizer.path in `config` wins (for a base model that moved), except
    tokenizer.path='builtin', the `:tiny` variants' default."""
    config = config.copy_and_resolve_references()
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        log.warning("%s not found: the config's model, tokenizer and peft sections must describe the "
                    "trained model", path)
        return config
    with open(path, encoding="utf-8") as f:
        run = json.load(f)
    keep = {(s, k): getattr(getattr(config, s), k) for s, k in _OVERRIDABLE_PATHS}
    for section in _RUN_SECTIONS:
        target = getattr(config, section)
        for key, value in run.get(section, {}).items():
            if key in target:
                setattr(target, key, value)
    for (section, key), value in keep.items():
        if value and value != BUILTIN:  # the `:tiny` default is not a choice: the run's tokenizer wins
            setattr(getattr(config, section), key, value)
    if "seed" in run:
        config.seed = run["seed"]  # a random (PEFT) base is rebuilt from the run's seed
    return config


def load_model(config, tokenizer, step_dir: str | None):
    """(model, variables, info) to generate with: a training run's checkpoint at `step_dir`, or the
    model the config describes (model.hf_path with peft.adapter_path, or a fresh random model).

    Full fine-tuning: the trained weights are restored straight into their shardings (the base
    is never loaded). PEFT: the base is built (or loaded) and the trained adapters restored onto
    it. Only the train state's `params` is read: optimizer state is never loaded.
    """
    par = parallel_from_config(config.parallel)
    cfg = model_config(config, tokenizer)
    spec, loaded_adapters = resolve_spec(config, cfg, tokenizer)
    info = {"family": cfg.family, "hf_path": config.model.hf_path, "peft": spec.method}
    if not spec.enabled:
        if step_dir:  # the trained weights replace the base, so the base is never read
            shardings = param_shardings(cfg, par)
            target = {"params": jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                             abstract_params(cfg), shardings)}
            params = restore_params(step_dir, target)["params"]
        else:
            params = build_params(config, cfg, par)
        info["params"] = count_leaves(params)
        return Transformer(cfg), {"params": params}, info
    if not step_dir and loaded_adapters is None:
        log.warning("peft.method=%s without a checkpoint or peft.adapter_path: evaluating freshly initialised "
                    "adapters", spec.method)
    base = build_params(config, cfg, par)
    info["params"] = count_leaves(base)
    model, variables, _ = prepare_peft(config, spec, cfg, base, logical_axes(cfg), par, loaded_adapters)
    adapters = restore_params(step_dir, variables.trainable) if step_dir else variables.trainable
    info["adapter_params"] = count_leaves(adapters)
    return model, {**variables.frozen, **adapters}, info
