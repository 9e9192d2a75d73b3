"""Jobs `pretrain` (causal LM on raw code) and `sft` (supervised fine-tuning).

Both are the same composition: tokenizer -> model -> data -> run_training.
They differ only in the data format they accept: pretraining reads raw text;
SFT reads alpaca, prompt/completion or chat rows and trains on completions only.
"""
from __future__ import annotations

import dataclasses
import logging
import os

import jax
import transformers

from codejax.data import build_datasets
from codejax.jobs import register
from codejax.models import (ModelConfig, Transformer, abstract_params, count_leaves, family_config,
                            flops_per_token, init_params, load_hf_params, logical_axes, preset_config,
                            read_hf_config, save_hf)
from codejax.parallel import Parallel, check_divisible, parallel_from_config
from codejax.peft.training import PeftSetup, export_peft, prepare_peft, resolve_spec
from codejax.models.config import tiny_config
from codejax.train.loop import TrainTask, run_training
from codejax.train.step import lm_loss_fn

log = logging.getLogger(__name__)


def load_tokenizer(config):
    path = config.tokenizer.path or config.model.hf_path
    if not path:
        raise ValueError("set tokenizer.path (a local HF tokenizer directory) or model.hf_path")
    return transformers.AutoTokenizer.from_pretrained(path)


def model_config(config, tokenizer) -> ModelConfig:
    """The ModelConfig: from model.hf_path's config.json, or built from the config fields."""
    mc = config.model
    switches = dict(dtype=mc.dtype, param_dtype=mc.param_dtype, scan_layers=mc.scan_layers,
                    remat_policy=mc.remat_policy)
    if mc.hf_path:  # the checkpoint's config.json decides the shape; the size fields are ignored
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


def build_params(config, cfg: ModelConfig, par: Parallel):
    """Params created or loaded straight into their shardings: never whole on one device."""
    shardings = par.param_shardings(logical_axes(cfg))
    check_divisible(abstract_params(cfg), shardings)
    if config.model.hf_path:
        by_path = {tuple(k.key for k in path): s for path, s in jax.tree_util.tree_leaves_with_path(
            shardings, is_leaf=lambda x: isinstance(x, jax.sharding.NamedSharding))}
        return load_hf_params(config.model.hf_path, cfg, place=lambda path, a: jax.device_put(a, by_path[path]))
    with par.context():
        return jax.jit(lambda: init_params(cfg, jax.random.PRNGKey(config.seed)), out_shardings=shardings)()


def _paths(spec: str) -> list[str]:
    return [p.strip() for p in spec.split(",") if p.strip()]


def build_data(config, tokenizer):
    dc = config.data
    if not dc.train_paths:
        raise ValueError("data.train_paths is empty: give local JSONL/JSON/parquet files or a saved HF dataset")
    eval_paths = _paths(dc.eval_paths) or None
    return build_datasets(
        tokenizer=tokenizer, train_paths=_paths(dc.train_paths), eval_paths=eval_paths,
        fmt=dc.format, seq_len=dc.seq_len, batch_size=dc.batch_size,
        eval_batch_size=dc.eval_batch_size or None,
        eval_fraction=0.0 if eval_paths else dc.eval_fraction,  # a given eval set replaces the split
        seed=config.seed,
        shuffle=dc.shuffle, num_epochs=dc.num_epochs or None, pack=dc.pack, overlength=dc.overlength,
        skip_bad_rows=dc.skip_bad_rows, text_field=dc.text_field,
        prompt_template=dc.prompt_template or None, hf_split=dc.hf_split)


@dataclasses.dataclass
class TrainableModel:
    """The model a job trains: full fine-tuning, or a PEFT adapter on a frozen base."""

    model: Transformer
    trainable: dict  # {"params": weights} or {adapter collection: adapters}
    trainable_axes: dict
    frozen: dict | None  # {"params": base} with PEFT, else None
    frozen_axes: dict | None
    peft: PeftSetup | None
    num_params: int  # of the (dense) base model


def build_trainable(config, tokenizer, par: Parallel) -> TrainableModel:
    """Model config, params (created or loaded in their shardings), and PEFT set-up from config.peft."""
    cfg = model_config(config, tokenizer)
    spec, loaded_adapters = resolve_spec(config, cfg, tokenizer)  # fails fast on a bad PEFT config
    params = build_params(config, cfg, par)
    n_params = count_leaves(params)  # before QLoRA's quantisation consumes the dense base
    if spec.method == "none":  # full fine-tuning: every weight trains
        return TrainableModel(Transformer(cfg), {"params": params}, {"params": logical_axes(cfg)}, None, None,
                              None, n_params)
    # The base is frozen; only the adapter trains and is checkpointed.
    peft = prepare_peft(config, spec, cfg, params, logical_axes(cfg), par, loaded_adapters)
    return TrainableModel(peft.model, peft.trainable, peft.trainable_axes, peft.frozen, peft.frozen_axes, peft,
                          n_params)


def export_trained(config, tm: TrainableModel, trained: dict, workdir: str, tokenizer) -> dict:
    """At the end of a run: the HF PEFT adapter (PEFT) and/or, with train.export_hf, the HF model."""
    if jax.process_index() != 0:
        return {}
    if tm.peft is not None:
        return export_peft(config, tm.peft, trained, workdir, tokenizer)
    if config.train.export_hf:
        path = os.path.join(workdir, "hf_model")
        save_hf(path, tm.model.cfg, trained["params"], tokenizer=tokenizer)
        return {"hf_model": path}
    return {}


def train_lm(config, workdir: str) -> dict:
    tokenizer = load_tokenizer(config)
    par = parallel_from_config(config.parallel)
    tm = build_trainable(config, tokenizer, par)
    data = build_data(config, tokenizer)
    log.info("data: %s", data.stats)
    task = TrainTask(
        loss_fn=lm_loss_fn(tm.model), params=tm.trainable, train_iter=iter(data.train),
        make_eval_iter=data.eval, data_stats=dict(data.stats),
        flops_per_token=flops_per_token(tm.model.cfg, config.data.seq_len, causal=True),
        parallel=par, param_axes=tm.trainable_axes, frozen=tm.frozen, frozen_axes=tm.frozen_axes)
    if config.eval.during_training:
        from codejax.jobs.eval import pass_at_k_hook  # the eval job imports this module
        task.extra_eval = pass_at_k_hook(config, tm.model, tokenizer)
    summary, state = run_training(config, workdir, task)
    return finish(config, tm, summary, state, workdir, tokenizer)


def finish(config, tm: TrainableModel, summary: dict, state: dict, workdir: str, tokenizer) -> dict:
    """Add the model facts to the summary and export, unless preempted."""
    summary["model"] = {"family": tm.model.cfg.family, "params": tm.num_params}
    if tm.peft is not None:
        summary["peft"] = tm.peft.stats
    if summary["stop_reason"] != "SIGTERM":  # never spend a preemption's grace period exporting
        summary.update(export_trained(config, tm, state["params"], workdir, tokenizer))
    return summary


@register("pretrain")
def pretrain(config, workdir: str) -> dict:
    if config.data.format != "text":
        raise ValueError(f"job 'pretrain' trains on raw text: data.format must be 'text', got {config.data.format!r}")
    return train_lm(config, workdir)


@register("sft")
def sft(config, workdir: str) -> dict:
    if config.data.format == "text":
        raise ValueError("job 'sft' needs prompt/response data (alpaca, prompt_completion or chat); "
                         "use job 'pretrain' for data.format='text'")
    return train_lm(config, workdir)
