"""The training loop shared by every job: step, log, evaluate, checkpoint, resume, stop.

`run_training` is deliberately a flat function you can read top to bottom. A
job supplies the pieces that differ (loss function, params, data) and gets
back a summary; the loop owns the workdir conventions:

    WORKDIR/config.json        the resolved config
    WORKDIR/checkpoints/       Orbax checkpoints (latest K + best K)
    WORKDIR/metrics.jsonl      one row per logged step
    WORKDIR/tensorboard/       TensorBoard event files
    WORKDIR/plots/*.png        loss, eval and learning-rate curves
    WORKDIR/summary.json       final figures

Restarting in the same workdir resumes from the newest good checkpoint:
params, optimizer state, step, RNG and the data iterator all come back, so the
loss sequence is the one an uninterrupted run produces.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import signal
import time
from typing import Any, Callable, Iterator

import jax
import numpy as np
from tqdm.auto import tqdm

from codejax.parallel import Parallel
from codejax.train.checkpoint import Checkpointer, abstract_like
from codejax.train.metrics import MetricsWriter, write_plots
from codejax.train.optim import make_optimizer
from codejax.train.step import LossFn, init_train_state, make_eval_step, make_train_step

log = logging.getLogger(__name__)

# Early-stopping record, kept in each checkpoint's metadata so a resumed run continues it.
_BEST_KEY, _PATIENCE_KEY = "early_stopping/best", "early_stopping/evals_without_gain"

# Dense bf16 peak FLOP/s per device, for the MFU estimate.
PEAK_FLOPS = {"TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
              "TPU v6 lite": 918e12, "TPU v6e": 918e12, "H100": 989e12, "H200": 989e12,
              "A100": 312e12, "L4": 121e12}


def peak_flops_per_device(override: float = 0.0) -> float | None:
    if override:
        return override
    kind = jax.devices()[0].device_kind
    for name, flops in PEAK_FLOPS.items():
        if name.lower() in kind.lower():
            return flops
    return None  # CPUs and unknown accelerators: no MFU rather than a made-up one


@dataclasses.dataclass
class TrainTask:
    """What a job hands the loop."""

    loss_fn: LossFn
    params: Any  # the trainable variables, e.g. {"params": weights} or {"lora": adapters}
    train_iter: Iterator[dict]  # with get_state() / set_state()
    make_eval_iter: Callable[[], Iterator[dict]] | None
    flops_per_token: float = 0.0  # model FLOPs per trained token, for MFU
    data_stats: dict | None = None
    # With a Parallel and the params' logical axes, state and batches are sharded over its mesh.
    parallel: Parallel | None = None
    param_axes: Any = None
    # Variables the loss reads but training leaves alone (a PEFT base): no gradients,
    # no optimizer state, not checkpointed. Already placed in their shardings.
    frozen: Any = None
    frozen_axes: Any = None
    # More eval metrics at every evaluation, from the trainable and frozen variables (e.g.
    # pass@k from codejax.evaluation); they can be train.best_metric and drive early stopping.
    extra_eval: Callable[[Any, Any], dict[str, float]] | None = None


class NonFiniteLossError(FloatingPointError):
    pass


def write_config(config, workdir: str) -> None:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
        f.write(config.to_json_best_effort(indent=2))


def evaluate(eval_step, params, make_eval_iter, max_batches: int = 0) -> dict[str, float]:
    """Token-weighted loss over the eval set (or its first `max_batches` batches).

    Returns {} (with a warning) when the eval set has no loss tokens, rather
    than a loss of 0 that would look like a perfect model.
    """
    loss_sum, weight_sum, sums = 0.0, 0.0, {}
    for i, batch in enumerate(make_eval_iter()):
        if max_batches and i >= max_batches:
            break
        s, w, batch_sums = jax.device_get(eval_step(params, batch))
        loss_sum, weight_sum = loss_sum + float(s), weight_sum + float(w)
        for k, v in batch_sums.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    if weight_sum == 0:
        log.warning("the eval set has no loss tokens (every example dropped? see the data stats); "
                    "no eval metrics this time")
        return {}
    loss = loss_sum / weight_sum
    return {"eval/loss": loss, "eval/perplexity": math.exp(min(loss, 50.0)), "eval/tokens": weight_sum,
            **{f"eval/{k}": v / weight_sum for k, v in sums.items()}}


def count_tokens(batch: dict) -> int:
    """Real (non-padding) positions in a batch: every `*segment_ids` array counts (pairs have two)."""
    return int(sum(np.sum(v > 0) for k, v in batch.items() if k.endswith("segment_ids")))


class _StopSignal:
    """Turns SIGTERM (preemption) into a flag the loop checks after each step."""

    def __init__(self):
        self.received = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread (e.g. some notebook kernels): no handler
            self._previous = None
        return self

    def _handle(self, signum, frame):
        del signum, frame
        self.received = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def run_training(config, workdir: str, task: TrainTask) -> tuple[dict[str, Any], dict]:
    """Train `task` for config.train.steps steps in `workdir`; returns (summary, final state)."""
    tc = config.train
    write_config(config, workdir)
    is_main = jax.process_index() == 0
    optimizer, schedule = make_optimizer(config.optim, tc.steps)
    par = task.parallel
    if par is None:
        state, state_sh = init_train_state(task.params, optimizer, config.seed), None
    else:
        check_batch_split(par, config.data.batch_size, config.optim.grad_accum_steps)
        check_batch_split(par, config.data.eval_batch_size or config.data.batch_size, 1)
        state_sh = par.state_shardings(optimizer, abstract_like(task.params), task.param_axes)
        with par.context():  # created in place, never whole on one device
            state = jax.jit(lambda p: init_train_state(p, optimizer, config.seed),
                            out_shardings=state_sh, donate_argnums=0)(task.params)
    place = par.shard_batch if par is not None else (lambda b: b)
    frozen = task.frozen or {}
    frozen_sh = par.param_shardings(task.frozen_axes) if par is not None and frozen else None
    checkpointer = Checkpointer(
        os.path.join(workdir, "checkpoints"), save_every=tc.checkpoint_every or tc.steps,
        keep_latest=tc.keep_checkpoints, keep_best=tc.keep_best, best_metric=tc.best_metric,
        best_mode=tc.best_mode, async_save=tc.async_checkpoint)
    restored = checkpointer.restore_latest(abstract_like(state))
    start_step, best_eval, evals_without_gain = 0, None, 0
    if restored is not None:
        start_step, state, data_state, meta = restored
        task.train_iter.set_state(data_state)
        # Early stopping carries on where it was, not from a blank record.
        best_eval = meta.get(_BEST_KEY)
        evals_without_gain = meta.get(_PATIENCE_KEY, 0)
        log.info("resumed from step %d in %s", start_step, workdir)
    summary_path = os.path.join(workdir, "summary.json")
    if restored is not None and os.path.exists(summary_path):
        with open(summary_path, encoding="utf-8") as f:
            previous = json.load(f)
        # Same step, same train.steps and not preempted: the run is over. (A larger
        # train.steps means the user asks for more, so training continues.)
        if (previous.get("steps") == start_step and previous.get("train_steps") == tc.steps
                and previous.get("stop_reason") != "SIGTERM"):
            log.info("%s already finished at step %d (%s); nothing to do", workdir, start_step,
                     previous.get("stop_reason"))
            checkpointer.close()
            return previous, state
    writer = MetricsWriter(workdir, resume_step=start_step if restored else None) if is_main else None

    train_step = make_train_step(task.loss_fn, optimizer, schedule, config.optim.grad_accum_steps,
                                 parallel=par, state_shardings=state_sh, frozen_shardings=frozen_sh)
    eval_step = functools.partial(make_eval_step(task.loss_fn, parallel=par, frozen_shardings=frozen_sh,
                                                 param_shardings=state_sh["params"] if state_sh else None),
                                  frozen=frozen)
    make_eval_iter = task.make_eval_iter and (lambda: map(place, task.make_eval_iter()))
    peak = peak_flops_per_device(tc.peak_flops_per_device)
    stop_reason = "completed"
    last_eval: dict[str, float] = {}
    tokens_seen, window_tokens, window_positions, window_start = 0, 0, 0, time.time()
    start_time = time.time()
    metrics: dict[str, Any] = {}

    def do_eval(step: int) -> bool:
        """Evaluate, log, and report whether early stopping triggers."""
        nonlocal best_eval, evals_without_gain, last_eval
        if make_eval_iter is None and task.extra_eval is None:
            return False
        last_eval = evaluate(eval_step, state["params"], make_eval_iter, tc.eval_batches) if make_eval_iter else {}
        if task.extra_eval is not None:
            last_eval.update(task.extra_eval(state["params"], frozen))
        if writer:
            writer.write(step, last_eval)
            write_plots(writer.path, os.path.join(workdir, "plots"))
        value = last_eval.get(tc.best_metric)
        if value is None:  # no metric this time (e.g. an empty eval set): nothing to count
            return False
        if best_eval is None or (value < best_eval if tc.best_mode == "min" else value > best_eval):
            best_eval, evals_without_gain = value, 0
        else:
            evals_without_gain += 1
        return bool(tc.early_stopping_patience) and evals_without_gain >= tc.early_stopping_patience

    def save(step: int, force: bool = False, with_eval: bool = False) -> None:
        if step in checkpointer.all_steps():  # e.g. a restart of a run that had already finished
            return
        meta = {**(last_eval if with_eval else {}), _BEST_KEY: best_eval, _PATIENCE_KEY: evals_without_gain}
        checkpointer.save(step, state, task.train_iter.get_state(), metrics=meta, force=force)

    if tc.eval_at_start and start_step == 0:
        do_eval(0)
    bar = tqdm(total=tc.steps, initial=start_step, disable=not (tc.progress_bar and is_main),
               desc="train", dynamic_ncols=True)
    step = start_step
    with _StopSignal() as stop_signal:
        while step < tc.steps:
            try:
                batch = next(task.train_iter)
            except StopIteration:  # a finite data.num_epochs ran out before train.steps
                stop_reason = f"data exhausted after {step} steps"
                log.warning("the training data ran out at step %d of %d", step, tc.steps)
                break
            state, metrics = train_step(state, place(batch), frozen)
            step += 1
            n_tokens = count_tokens(batch)
            tokens_seen += n_tokens
            window_tokens += n_tokens
            window_positions += sum(v.size for k, v in batch.items() if k.endswith("segment_ids"))
            bar.update(1)

            if step % tc.log_every == 0 or step == tc.steps:
                host = {k: float(v) for k, v in jax.device_get(metrics).items()}
                _check_finite(host, step, checkpointer)
                elapsed = time.time() - window_start
                tokens_per_s = window_tokens / max(elapsed, 1e-9)
                row = {f"train/{k}": v for k, v in host.items()}
                row["train/perplexity"] = math.exp(min(host["loss"], 50.0))
                row["train/tokens_per_s"] = tokens_per_s
                if peak and task.flops_per_token:
                    # Hardware work counts every position, padding included.
                    positions_per_s = window_positions / max(elapsed, 1e-9)
                    row["train/mfu"] = task.flops_per_token * positions_per_s / (peak * jax.device_count())
                if writer:
                    writer.write(step, row)
                bar.set_postfix(loss=f"{host['loss']:.3f}", tok_s=f"{tokens_per_s:,.0f}")
                window_tokens, window_positions, window_start = 0, 0, time.time()

            evaluated = False
            if tc.eval_every and step % tc.eval_every == 0 and step < tc.steps:
                evaluated = True
                if do_eval(step):
                    stop_reason = f"early stopping: {tc.best_metric} did not improve in " \
                                  f"{tc.early_stopping_patience} evaluations"
                    save(step, force=True, with_eval=True)
                    break
            if _any_process(stop_signal.received):
                stop_reason = "SIGTERM"
                save(step, force=True, with_eval=evaluated)
                log.warning("SIGTERM received: saved a checkpoint at step %d and stopped", step)
                break
            if tc.checkpoint_every and step % tc.checkpoint_every == 0 and step < tc.steps:
                _check_finite(metrics, step, checkpointer)
                save(step, with_eval=evaluated)
    bar.close()

    if stop_reason == "completed" or stop_reason.startswith("data exhausted"):
        do_eval(step)
        _check_finite(metrics, step, checkpointer)
        save(step, force=True, with_eval=bool(last_eval))
    checkpointer.wait()
    summary = {
        "steps": step, "train_steps": tc.steps, "stop_reason": stop_reason,
        "tokens_seen_this_run": tokens_seen,
        "seconds_this_run": time.time() - start_time,
        "final_train_loss": float(metrics["loss"]) if metrics else None,
        "best_eval": best_eval, "last_eval": last_eval, "best_checkpoint_step": checkpointer.best_step(),
        "data": task.data_stats or {},
    }
    if writer:
        writer.write(step, {f"data/{k}": v for k, v in (task.data_stats or {}).items()
                            if isinstance(v, (int, float))})
        writer.close()
        write_plots(writer.path, os.path.join(workdir, "plots"))
        with open(summary_path, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2, default=str)
    checkpointer.close()
    return summary, state


def _any_process(flag: bool) -> bool:
    """True on every host if it is True on any: hosts must agree before a collective save."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils
    return bool(np.max(multihost_utils.process_allgather(np.int32(flag))))


def check_batch_split(par: Parallel, batch_size: int, grad_accum_steps: int) -> None:
    devices = par.mesh.shape["data"] * par.mesh.shape["fsdp"]
    micro = batch_size // max(grad_accum_steps, 1)
    if batch_size % max(grad_accum_steps, 1) or micro % devices:
        raise ValueError(f"data.batch_size={batch_size} with optim.grad_accum_steps={grad_accum_steps} gives "
                         f"micro-batches of {micro} rows, which must split evenly over the {devices} "
                         f"data x fsdp devices of the mesh")


def _check_finite(metrics, step: int, checkpointer: Checkpointer) -> None:
    """Never checkpoint a diverged state: the last good checkpoint must stay the newest.

    The loss is computed before the update, so a NaN/Inf gradient (which poisons
    the new params) shows only in grad_norm at that step.
    """
    for key in ("loss", "grad_norm"):
        if metrics and key in metrics and not math.isfinite(float(metrics[key])):
            checkpointer.wait()
            raise NonFiniteLossError(
                f"{key} is {float(metrics[key])} at step {step}; stopping. The last good checkpoint "
                f"(step {checkpointer.latest_step()}) is kept in {checkpointer.directory}")
