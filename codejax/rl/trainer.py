"""The on-policy RL loop shared by GRPO, RLOO and PPO: sample, score, compute advantages, update.

One RL step:
1. take `prompts_per_step` prompts (a seeded, checkpointed pass over the prompt set);
2. sample `group_size` completions each with the current policy (codejax.generate);
3. reward them (RewardSpec: registered functions, a reward model, an ensemble; missing-EOS penalty);
4. one no-grad pass for the rollout's log-probs (and the reference's, and PPO's values);
5. advantages: group-normalised (GRPO), leave-one-out (RLOO), or GAE over per-token
   rewards carrying the KL penalty (PPO, with an adaptive or fixed KL coefficient);
6. `epochs` passes of `minibatches` optimizer steps over the rollouts (the training core's
   jitted train step, with accumulation and sharding).

It writes the workdir like codejax.train.loop (metrics.jsonl, TensorBoard, plots, Orbax
checkpoints with the prompt iterator and KL coefficient, summary.json) and resumes from it.
Held-out prompts are scored greedily every `train.eval_every` steps (eval/reward, the
best-checkpoint metric).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from codejax.generate import SamplingParams, generate
from codejax.losses import (AdaptiveKLController, FixedKLController, gae, group_advantages, kl_estimate,
                            rloo_advantages, whiten, zero_spread_fraction)
from codejax.parallel import Parallel
from codejax.rl import objectives
from codejax.rl.rollout import RewardSpec, completion_view, model_variables, rollout_batch, token_logprobs
from codejax.train.checkpoint import Checkpointer, abstract_like
from codejax.train.loop import write_config
from codejax.train.metrics import MetricsWriter, write_plots
from codejax.train.optim import make_optimizer
from codejax.train.step import combine, init_train_state, make_train_step

log = logging.getLogger(__name__)

ALGORITHMS = ("grpo", "rloo", "ppo")


@dataclasses.dataclass
class RLTask:
    algorithm: str  # grpo | rloo | ppo
    model: Any
    tokenizer: Any
    params: dict  # trainable variables (PPO: with "score_head", maybe "value_params")
    param_axes: dict
    frozen: dict | None  # PEFT base
    frozen_axes: dict | None
    reference: Callable[[dict, dict], dict] | None  # (trainable, frozen) -> reference variables; None = no KL
    rewards: RewardSpec
    train_prompts: list[dict]  # rows with "prompt_ids", "prompt" (text) and reward columns
    eval_prompts: list[dict]
    parallel: Parallel | None = None


class PromptIterator:
    """Seeded epochs over prompt indices; its state (epoch, position) goes in the checkpoint."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch, self.pos = n, seed, 0, 0

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            take = min(k - len(out), self.n - self.pos)
            out.extend(order[self.pos:self.pos + take].tolist())
            self.pos += take
            if self.pos == self.n:
                self.epoch, self.pos = self.epoch + 1, 0
        return out

    def get_state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "n": self.n}

    def set_state(self, state: dict) -> None:
        if state.get("n") != self.n:
            raise ValueError(f"checkpointed prompt iterator covered {state.get('n')} prompts, this run has {self.n}")
        self.epoch, self.pos = state["epoch"], state["pos"]


def _columns(rows: list[dict], repeat: int) -> dict[str, list]:
    skip = {"prompt", "prompt_ids"}
    keys = sorted({k for r in rows for k in r} - skip)
    return {k: [r.get(k) for r in rows for _ in range(repeat)] for k in keys}


def sample_and_score(task: RLTask, variables: dict, rows: list[dict], params: SamplingParams):
    """Samples for `rows` and their rewards: (samples, total [N], {name: [N]})."""
    samples = generate(task.model, model_variables(variables), task.tokenizer, [r["prompt_ids"] for r in rows], params)
    prompts = [rows[i]["prompt"] for i in samples.prompt_index]
    total, parts = task.rewards(prompts, samples.texts, _columns(rows, params.n), samples.finish_reasons)
    return samples, total, parts


def _reward_metrics(prefix: str, total: np.ndarray, parts: dict, samples) -> dict[str, float]:
    lengths = np.asarray([len(t) for t in samples.tokens])
    out = {f"{prefix}/reward": float(np.nanmean(total)) if np.isfinite(total).any() else float("nan"),
           f"{prefix}/completion_length": float(lengths.mean()),
           f"{prefix}/truncated_fraction": float(np.mean([r == "length" for r in samples.finish_reasons]))}
    for name, values in parts.items():
        if np.isfinite(values).any():
            out[f"{prefix}/rewards/{name}"] = float(np.nanmean(values))
    return out


def run_rl(config, workdir: str, task: RLTask) -> tuple[dict, dict]:
    rc, tc = config.rl, config.train
    if task.algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm {task.algorithm!r}; expected one of {ALGORITHMS}")
    n_rollouts = rc.prompts_per_step * rc.group_size
    if rc.minibatches < 1 or n_rollouts % rc.minibatches:
        raise ValueError(f"rl.prompts_per_step x rl.group_size = {n_rollouts} rollouts do not split into "
                         f"rl.minibatches={rc.minibatches}")
    if task.algorithm in ("grpo", "rloo") and rc.group_size < 2:
        raise ValueError(f"{task.algorithm} compares completions within a group: rl.group_size must be >= 2")
    mb_size = n_rollouts // rc.minibatches
    par = task.parallel
    if par is not None:
        devices = par.mesh.shape["data"] * par.mesh.shape["fsdp"]
        if mb_size % (devices * config.optim.grad_accum_steps):
            raise ValueError(f"minibatches of {mb_size} rollouts (prompts_per_step x group_size / minibatches) must "
                             f"split over {devices} data x fsdp devices x optim.grad_accum_steps="
                             f"{config.optim.grad_accum_steps}")
    write_config(config, workdir)
    is_main = jax.process_index() == 0
    prompt_len = max(len(r["prompt_ids"]) for r in task.train_prompts + task.eval_prompts)
    max_new = rc.max_new_tokens
    pad_id = task.tokenizer.pad_token_id if task.tokenizer.pad_token_id is not None else task.tokenizer.eos_token_id

    updates_per_step = rc.epochs * rc.minibatches
    optimizer, schedule = make_optimizer(config.optim, tc.steps * updates_per_step)
    if par is None:
        state, state_sh, frozen_sh = init_train_state(task.params, optimizer, config.seed), None, None
    else:
        state_sh = par.state_shardings(optimizer, abstract_like(task.params), task.param_axes)
        with par.context():
            state = jax.jit(lambda p: init_train_state(p, optimizer, config.seed), out_shardings=state_sh,
                            donate_argnums=0)(task.params)
        frozen_sh = par.param_shardings(task.frozen_axes) if task.frozen else None
    frozen = task.frozen or {}
    place = par.shard_batch if par is not None else (lambda b: b)
    make_loss = objectives.ppo_loss_fn if task.algorithm == "ppo" else objectives.grpo_loss_fn
    train_step = make_train_step(make_loss(task.model, rc, prompt_len, max_new), optimizer, schedule,
                                 config.optim.grad_accum_steps, parallel=par, state_shardings=state_sh,
                                 frozen_shardings=frozen_sh)
    kl = (AdaptiveKLController(rc.kl_coef, rc.kl_target, rc.kl_horizon) if rc.adaptive_kl
          else FixedKLController(rc.kl_coef))
    need_ref = task.reference is not None and rc.kl_coef > 0

    @jax.jit
    def score(trainable, frozen_vars, batch):
        """No-grad pass over the rollouts: old log-probs, reference log-probs, values."""
        variables = combine(trainable, frozen_vars)
        out = {}
        if task.algorithm == "ppo":
            out["old_logp"], out["old_values"] = objectives.policy_and_values(task.model, variables, batch, prompt_len)
        else:
            logits = task.model.apply(model_variables(variables), batch["inputs"], batch["positions"],
                                      batch["segment_ids"])
            out["old_logp"] = completion_view(token_logprobs(logits, batch["targets"]), prompt_len)
        if need_ref:
            ref_logits = task.model.apply(task.reference(trainable, frozen_vars), batch["inputs"], batch["positions"],
                                          batch["segment_ids"])
            out["ref_logp"] = completion_view(token_logprobs(ref_logits, batch["targets"]), prompt_len)
        return out

    prompts = PromptIterator(len(task.train_prompts), config.seed)
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), save_every=tc.checkpoint_every or tc.steps,
                                keep_latest=tc.keep_checkpoints, keep_best=tc.keep_best, best_metric=tc.best_metric,
                                best_mode=tc.best_mode, async_save=tc.async_checkpoint)
    start, last_eval = 0, {}
    restored = checkpointer.restore_latest(abstract_like(state))
    if restored is not None:
        start, state, data_state, _ = restored
        prompts.set_state(data_state["prompts"])
        kl.load_state_dict(data_state["kl"])
        log.info("resumed RL from step %d in %s", start, workdir)
    writer = MetricsWriter(workdir, resume_step=start if restored else None) if is_main else None
    sampling = SamplingParams(max_new_tokens=max_new, temperature=rc.temperature, top_p=rc.top_p, top_k=rc.top_k,
                              n=rc.group_size, stop=tuple(s for s in rc.stop.split("|") if s))
    greedy = dataclasses.replace(sampling, temperature=0.0, top_p=1.0, top_k=0, n=1)

    def do_eval(step: int) -> dict:
        if not task.eval_prompts:
            return {}
        samples, total, parts = sample_and_score(task, combine(state["params"], frozen), task.eval_prompts, greedy)
        metrics = _reward_metrics("eval", total, parts, samples)
        if writer:
            writer.write(step, metrics)
        return metrics

    def save(step: int, force: bool = False) -> None:
        if step not in checkpointer.all_steps():
            checkpointer.save(step, state, {"prompts": prompts.get_state(), "kl": kl.state_dict()},
                              metrics=last_eval or None, force=force)

    if tc.eval_at_start and start == 0:
        last_eval = do_eval(0)
    bar = tqdm(total=tc.steps, initial=start, disable=not (tc.progress_bar and is_main), desc=task.algorithm,
               dynamic_ncols=True)
    t_start = time.time()
    metrics: dict[str, float] = {}
    for step in range(start + 1, tc.steps + 1):
        t0 = time.time()
        rows = [task.train_prompts[i] for i in prompts.take(rc.prompts_per_step)]
        variables = combine(state["params"], frozen)
        samples, total, parts = sample_and_score(
            task, variables, rows, dataclasses.replace(sampling, seed=config.seed * 1_000_003 + step))
        t_sample = time.time() - t0
        batch = rollout_batch([r["prompt_ids"] for r in rows for _ in range(rc.group_size)], samples.tokens,
                              prompt_len, max_new, pad_id)
        if rc.mask_truncated:
            truncated = np.asarray([r == "length" for r in samples.finish_reasons])
            batch["mask"][truncated] = 0.0
        scored = jax.device_get(score(state["params"], frozen, batch))
        batch.update(scored)
        metrics = _reward_metrics("train", total, parts, samples)
        metrics["train/time/sampling_s"] = t_sample
        rewards = np.nan_to_num(total, nan=0.0) if task.algorithm == "ppo" else total
        if task.algorithm == "ppo":
            batch.update(_ppo_advantages(batch, rewards, rc, kl.value, metrics))
        else:
            adv = (rloo_advantages(jnp.asarray(total), rc.group_size) if task.algorithm == "rloo" else
                   group_advantages(jnp.asarray(total), rc.group_size, scale=rc.scale_rewards))
            batch["advantages"] = np.asarray(adv, np.float32)
            metrics["train/zero_spread_fraction"] = float(zero_spread_fraction(jnp.asarray(total), rc.group_size))
            if need_ref:
                metrics["train/kl"] = _token_mean(np.asarray(kl_estimate(batch["old_logp"], batch["ref_logp"], "k3")),
                                                  batch["mask"])
        step_metrics = []
        rng = np.random.default_rng([config.seed, 7, step])  # per step, so a resumed run shuffles alike
        for _ in range(rc.epochs):
            order = rng.permutation(n_rollouts)
            for m in range(rc.minibatches):
                idx = order[m * mb_size:(m + 1) * mb_size]
                state, out = train_step(state, place({k: v[idx] for k, v in batch.items()}), frozen)
                step_metrics.append(out)
        for key, value in jax.device_get(step_metrics[-1]).items():
            metrics[f"train/{key}"] = float(value)
        if task.algorithm == "ppo":
            kl.update(metrics["train/kl"], n_rollouts)
            metrics["train/kl_coef"] = float(kl.value)
        metrics["train/time/step_s"] = time.time() - t0
        if not all(np.isfinite(metrics[k]) for k in ("train/loss", "train/grad_norm")):
            checkpointer.wait()
            raise FloatingPointError(f"non-finite loss or gradient at RL step {step}; the last good checkpoint "
                                     f"(step {checkpointer.latest_step()}) is kept in {checkpointer.directory}")
        if writer and (step % tc.log_every == 0 or step == tc.steps):
            writer.write(step, metrics)
        bar.update(1)
        bar.set_postfix(reward=f"{metrics['train/reward']:.3f}")
        if tc.eval_every and step % tc.eval_every == 0 and step < tc.steps:
            last_eval = do_eval(step)
        if tc.checkpoint_every and step % tc.checkpoint_every == 0 and step < tc.steps:
            save(step)
    bar.close()
    final = start if start >= tc.steps else tc.steps
    if start < tc.steps:
        last_eval = do_eval(final)
        save(final, force=True)
    checkpointer.wait()
    summary = {"steps": final, "train_steps": tc.steps, "algorithm": task.algorithm, "stop_reason": "completed",
               "seconds_this_run": time.time() - t_start, "last_train": metrics, "last_eval": last_eval,
               "best_checkpoint_step": checkpointer.best_step(), "prompts": {"train": len(task.train_prompts),
                                                                              "eval": len(task.eval_prompts)}}
    if writer:
        writer.close()
        write_plots(writer.path, os.path.join(workdir, "plots"))
        with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2, default=str)
    checkpointer.close()
    return summary, state


def _token_mean(x: np.ndarray, mask: np.ndarray) -> float:
    return float(np.sum(x * mask) / max(np.sum(mask), 1.0))


def _ppo_advantages(batch: dict, rewards: np.ndarray, rc, kl_coef: float, metrics: dict) -> dict:
    """Per-token rewards (-kl_coef x KL each token, the score at the last), GAE, whitened advantages."""
    mask = batch["mask"]
    lengths = mask.sum(1).astype(int)
    token_rewards = np.zeros_like(mask)
    if "ref_logp" in batch:
        kl_tokens = np.asarray(kl_estimate(batch["old_logp"], batch["ref_logp"], rc.kl_estimator)) * mask
        token_rewards -= kl_coef * kl_tokens
        metrics["train/kl"] = float(np.mean(kl_tokens.sum(1)))  # per sequence, as the controller expects
    else:
        metrics["train/kl"] = 0.0
    rows = np.flatnonzero(lengths > 0)
    token_rewards[rows, lengths[rows] - 1] += rewards[rows]
    if rc.whiten_rewards:
        token_rewards = np.asarray(whiten(jnp.asarray(token_rewards), jnp.asarray(mask), shift_mean=False))
    adv, returns = gae(jnp.asarray(token_rewards), jnp.asarray(batch["old_values"]), jnp.asarray(mask), rc.gamma, rc.lam)
    adv = whiten(adv, jnp.asarray(mask))
    metrics["train/value_mean"] = _token_mean(batch["old_values"], mask)
    return {"advantages": np.asarray(adv, np.float32), "returns": np.asarray(returns, np.float32)}
