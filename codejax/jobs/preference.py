"""Jobs `reward` (a Bradley-Terry reward model) and `dpo` (the DPO family), on preference pairs.

    python -m codejax.main --config configs/reward.py:tiny --workdir /tmp/rm --config.data.train_paths=pairs.jsonl ...
    python -m codejax.main --config configs/dpo.py:tiny --workdir /tmp/dpo --config.data.train_paths=pairs.jsonl ...

Both are tokenizer -> model (full or PEFT, codejax.jobs.lm.build_trainable) -> pair data
(codejax.rl.preference_data) -> run_training, like SFT. Their extra metrics (accuracy,
implicit rewards and margins) are logged under train/ and eval/.
"""
from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np

from codejax.jobs import register
from codejax.jobs.lm import TrainableModel, build_trainable, finish, load_tokenizer
from codejax.losses import DPO_LOSSES
from codejax.models import flops_per_token
from codejax.parallel import parallel_from_config
from codejax.rl import dpo, reward_model
from codejax.rl.preference_data import PreferenceFields, batch_rows, build_pair_datasets, padding_pair
from codejax.train.loop import TrainTask, run_training

log = logging.getLogger(__name__)


def _paths(spec: str) -> list[str]:
    return [p.strip() for p in spec.split(",") if p.strip()]


def build_pair_data(config, tokenizer, *, shift: bool, extra=None):
    dc, pc = config.data, config.preference
    if not dc.train_paths:
        raise ValueError("data.train_paths is empty: give preference rows ({prompt, chosen, rejected} JSONL, ...)")
    eval_paths = _paths(dc.eval_paths) or None
    fields = PreferenceFields(pc.prompt_field, pc.chosen_field, pc.rejected_field, pc.margin_field)
    return build_pair_datasets(
        tokenizer=tokenizer, train_paths=_paths(dc.train_paths), eval_paths=eval_paths, seq_len=dc.seq_len,
        batch_size=dc.batch_size, eval_batch_size=dc.eval_batch_size or None,
        eval_fraction=0.0 if eval_paths else dc.eval_fraction, seed=config.seed, shuffle=dc.shuffle,
        max_prompt_len=pc.max_prompt_len, skip_bad_rows=dc.skip_bad_rows, fields=fields, shift=shift,
        hf_split=dc.hf_split, extra=extra)


def _pair_flops(tm: TrainableModel, seq_len: int, forwards: float) -> float:
    """FLOPs per real token: `forwards` extra no-grad passes (the reference) cost 1/3 of a step each."""
    return flops_per_token(tm.model.cfg, seq_len, causal=True) * (1 + forwards / 3)


@register("reward")
def train_reward(config, workdir: str) -> dict:
    tokenizer = load_tokenizer(config)
    par = parallel_from_config(config.parallel)
    tm = build_trainable(config, tokenizer, par)
    cfg = tm.model.cfg
    head_sharding = par.param_shardings(reward_model.score_head_axes())
    with par.context():
        head = jax.jit(lambda: reward_model.init_score_head(cfg.hidden_size, jax.random.PRNGKey(config.seed + 2)),
                       out_shardings=head_sharding)()
    tm.trainable = {**tm.trainable, reward_model.HEAD: head}
    tm.trainable_axes = {**tm.trainable_axes, reward_model.HEAD: reward_model.score_head_axes()}
    data = build_pair_data(config, tokenizer, shift=False)
    task = TrainTask(
        loss_fn=reward_model.reward_loss_fn(tm.model, config.preference.center_coef), params=tm.trainable,
        train_iter=iter(data.train), make_eval_iter=data.eval, data_stats=dict(data.stats),
        flops_per_token=_pair_flops(tm, config.data.seq_len, 0), parallel=par, param_axes=tm.trainable_axes,
        frozen=tm.frozen, frozen_axes=tm.frozen_axes)
    summary, state = run_training(config, workdir, task)
    summary["model"] = {"family": cfg.family, "params": tm.num_params}
    if tm.peft is not None:
        summary["peft"] = tm.peft.stats
    # No HF export: the head is not an HF sequence-classification layout codejax writes (yet);
    # PPO/GRPO load the reward model from this run's checkpoints (config.rl.reward_model).
    return summary


def _reference_extra(config, tm: TrainableModel, ref_variables: dict, pad_id: int):
    """`extra` for build_pair_datasets: each pair row's reference log-probs, computed once."""
    batch = config.data.eval_batch_size or config.data.batch_size
    filler = padding_pair(config.data.seq_len, pad_id)

    def extra(rows: list[dict]) -> list[dict]:
        logps = dpo.precompute_reference(tm.model, ref_variables, batch_rows(rows, batch, filler))
        return [{"ref_chosen": np.float32(c), "ref_rejected": np.float32(r)} for c, r in logps[:len(rows)]]

    return extra


@register("dpo")
def train_dpo(config, workdir: str) -> dict:
    pc = config.preference
    if pc.loss_type not in DPO_LOSSES:
        raise ValueError(f"preference.loss_type={pc.loss_type!r}; expected one of {DPO_LOSSES}")
    if pc.loss_type == "robust" and not 0 <= pc.label_smoothing < 0.5:
        raise ValueError(f"preference.label_smoothing must be in [0, 0.5) for the robust loss, got {pc.label_smoothing}")
    tokenizer = load_tokenizer(config)
    par = parallel_from_config(config.parallel)
    tm = build_trainable(config, tokenizer, par)
    needs_ref = pc.loss_type not in dpo.REFERENCE_FREE
    extra, ref_passes = None, 0
    if needs_ref and pc.precompute_ref:
        ref_variables = tm.frozen if tm.peft is not None else tm.trainable  # the initial weights, adapters off
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        extra = _reference_extra(config, tm, dpo.reference_variables(ref_variables), pad_id)
    elif needs_ref:
        ref_passes = 1
        if tm.peft is None:  # full fine-tuning: the reference is a frozen copy of the initial weights
            shardings = par.param_shardings(tm.trainable_axes["params"])
            with par.context():
                ref = jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=shardings)(tm.trainable["params"])
            tm.frozen, tm.frozen_axes = {dpo.REF: ref}, {dpo.REF: tm.trainable_axes["params"]}
    data = build_pair_data(config, tokenizer, shift=True, extra=extra)
    task = TrainTask(
        loss_fn=dpo.dpo_loss_fn(tm.model, pc), params=tm.trainable, train_iter=iter(data.train),
        make_eval_iter=data.eval, data_stats=dict(data.stats),
        flops_per_token=_pair_flops(tm, config.data.seq_len, ref_passes), parallel=par,
        param_axes=tm.trainable_axes, frozen=tm.frozen, frozen_axes=tm.frozen_axes)
    summary, state = run_training(config, workdir, task)
    return finish(config, tm, summary, state, workdir, tokenizer)

