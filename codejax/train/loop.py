"""The training loop of the LM-style jobs (pretrain, sft, reward, dpo): step, log, evaluate, stop.

`run_training` reads top to bottom. A job supplies what differs (`TrainInputs`: the loss
function, the variables, the data) and gets back a summary and the final state; the run
scaffold (codejax/train/run.py) owns the workdir, resume, checkpoints, SIGTERM, non-finite
checks and early stopping. Restarting in the same workdir resumes from the newest good
checkpoint: params, optimizer state, step, RNG and the data iterator all come back, so the
loss sequence is the one an uninterrupted run produces.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from typing import Any, Callable, Iterator

import jax
import numpy as np

from codejax.objectives.variables import ModelVariables
from codejax.parallel import Parallel
from codejax.train.console import data_table
from codejax.train.optim import make_optimizer
from codejax.train.run import Run, check_batch_split
from codejax.train.step import LossFn, make_eval_step, make_train_step

log = logging.getLogger(__name__)

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
class TrainInputs:
    """What a job hands `run_training`."""

    loss_fn: LossFn
    variables: ModelVariables  # trainable (and frozen) collections with their logical axes
    train_iter: Iterator[dict]  # with get_state() / set_state()
    make_eval_iter: Callable[[], Iterator[dict]] | None
    flops_per_token: float = 0.0  # model FLOPs per trained token, for MFU
    data_stats: dict | None = None
    # With a Parallel, state and batches are sharded over its mesh by the variables' logical axes.
    parallel: Parallel | None = None
    # More eval metrics at every evaluation, from the current variables (trainable and frozen, one
    # dict; e.g. pass@k from codejax.evaluation); they can be train.best_metric and drive early stopping.
    extra_eval: Callable[[dict], dict[str, float]] | None = None
    # What loss_fn's weight counts: "tokens" (an LM loss, per token: perplexity = exp(loss) is logged)
    # or "pairs" (preference losses, per pair: no perplexity). The eval metric eval/<unit> is that count.
    weight_unit: str = "tokens"


def evaluate(eval_step, params, make_eval_iter, max_batches: int = 0, weight_unit: str = "tokens") -> dict[str, float]:
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
    lm = {"eval/perplexity": math.exp(min(loss, 50.0))} if weight_unit == "tokens" else {}
    return {"eval/loss": loss, **lm, f"eval/{weight_unit}": weight_sum,
            **{f"eval/{k}": v / weight_sum for k, v in sums.items()}}


def count_tokens(batch: dict) -> int:
    """Real (non-padding) positions in a batch: every `*segment_ids` array counts (pairs have two)."""
    return int(sum(np.sum(v > 0) for k, v in batch.items() if k.endswith("segment_ids")))


def run_training(config, workdir: str, inputs: TrainInputs) -> tuple[dict[str, Any], dict]:
    """Train `inputs` for config.train.steps steps in `workdir`; returns (summary, final state)."""
    tc, par = config.train, inputs.parallel
    optimizer, schedule = make_optimizer(config.optim, tc.steps)
    if par is not None:
        check_batch_split(par, config.data.batch_size, config.optim.grad_accum_steps)
        check_batch_split(par, config.data.eval_batch_size or config.data.batch_size, 1, "data.eval_batch_size")
    if inputs.data_stats:
        data_table(inputs.data_stats, config)
    with Run(config, workdir, inputs.variables, optimizer, inputs.train_iter, par) as run:
        if run.finished:
            return run.finished, run.state
        train_step = make_train_step(inputs.loss_fn, optimizer, schedule, config.optim.grad_accum_steps,
                                     parallel=par, state_shardings=run.state_shardings,
                                     frozen_shardings=run.frozen_shardings)
        eval_step = functools.partial(
            make_eval_step(inputs.loss_fn, parallel=par, frozen_shardings=run.frozen_shardings,
                           param_shardings=run.state_shardings["params"] if run.state_shardings else None),
            frozen=run.frozen)
        make_eval_iter = inputs.make_eval_iter and (lambda: map(run.place, inputs.make_eval_iter()))
        peak = peak_flops_per_device(tc.peak_flops_per_device)

        def do_eval(step: int) -> bool:
            """Evaluate the eval set's loss and extra_eval's metrics (pass@k); True when the patience has run out."""
            if make_eval_iter is None and inputs.extra_eval is None:
                return False
            params = run.state["params"]
            metrics = evaluate(eval_step, params, make_eval_iter, tc.eval_batches, inputs.weight_unit) \
                if make_eval_iter else {}
            if inputs.extra_eval is not None:
                metrics.update(inputs.extra_eval({**run.frozen, **params}))
            return run.evaluate(step, metrics)

        if tc.eval_at_start and run.start_step == 0:
            do_eval(0)
        metrics: dict[str, Any] = {}
        tokens_seen, window_tokens, window_positions, window_start = 0, 0, 0, time.time()
        for step in range(run.start_step + 1, tc.steps + 1):
            try:
                batch = next(inputs.train_iter)
            except StopIteration:  # a finite data.num_epochs ran out before train.steps
                run.stop_reason = f"data exhausted after {step - 1} steps"
                log.warning("the training data ran out at step %d of %d", step - 1, tc.steps)
                break
            run.state, metrics = train_step(run.state, run.place(batch), run.frozen)
            run.step = step
            n_tokens = count_tokens(batch)
            tokens_seen += n_tokens
            window_tokens += n_tokens
            window_positions += sum(v.size for k, v in batch.items() if k.endswith("segment_ids"))

            if step % tc.log_every == 0 or step == tc.steps:
                host = {k: float(v) for k, v in jax.device_get(metrics).items()}
                run.check_finite(host, step)
                elapsed = time.time() - window_start
                row = {f"train/{k}": v for k, v in host.items()}
                if inputs.weight_unit == "tokens":
                    row["train/perplexity"] = math.exp(min(host["loss"], 50.0))
                row["train/tokens_per_s"] = window_tokens / max(elapsed, 1e-9)
                if peak and inputs.flops_per_token:
                    # Hardware work counts every position, padding included.
                    positions_per_s = window_positions / max(elapsed, 1e-9)
                    row["train/mfu"] = inputs.flops_per_token * positions_per_s / (peak * jax.device_count())
                run.log(step, row)
                run.progress(loss=f"{host['loss']:.3f}", tok_s=f"{row['train/tokens_per_s']:,.0f}")
                window_tokens, window_positions, window_start = 0, 0, time.time()
            else:
                run.progress()

            if run.end_step(step, metrics, do_eval):  # eval when due; early stop, SIGTERM, checkpoint
                break

        if run.needs_final_eval:
            do_eval(run.step)
        if run.completed:
            run.save_final(metrics)
        if inputs.data_stats:
            run.log(run.step, {f"data/{k}": v for k, v in inputs.data_stats.items() if isinstance(v, (int, float))})
        summary = run.close({"tokens_seen_this_run": tokens_seen,
                             "final_train_loss": float(metrics["loss"]) if metrics else None,
                             "data": inputs.data_stats or {}})
        return summary, run.state
