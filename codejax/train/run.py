"""The one run scaffold: what every training loop does around its steps.

A loop (codejax/train/loop.py for LM-style jobs, codejax/rl/loop.py for RL) opens a
`Run`, does its steps, and closes it. The Run owns the workdir conventions:

    WORKDIR/config.json        the resolved config (written atomically)
    WORKDIR/checkpoints/       Orbax checkpoints (latest K + best K) with the data state
    WORKDIR/metrics.jsonl      one row per logged step
    WORKDIR/tensorboard/       TensorBoard event files
    WORKDIR/plots/*.png        loss, eval and learning-rate curves
    WORKDIR/summary.json       final figures

and the parts every loop needs alike: the train state created in its shardings,
resume (state, data iterator and the early-stopping record from the newest good
checkpoint; a finished run is not rerun), SIGINT/SIGTERM with the hosts agreeing on
when to stop (a checkpoint of the current step, `stop_reason` "interrupted" or
"SIGTERM"), non-finite checks that never checkpoint a diverged state, early stopping on
`train.best_metric`, `stop_reason`, and the summary. config.json is written only once
the restore has succeeded (the job's guard, codejax/train/guard.py, has already checked
the new config against the saved one and holds the workdir lock).

    with Run(config, workdir, variables, optimizer, data_iter, parallel) as run:
        if run.finished:
            return run.finished, run.state
        for step in range(run.start_step + 1, config.train.steps + 1):
            run.state, metrics = train_step(run.state, run.place(next(data_iter)), run.frozen)
            run.step = step
            ... run.log(step, row); run.check_finite(metrics, step)
            if run.end_step(step, metrics, evaluate):  # eval when due; early stop, SIGTERM, checkpoint
                break
        if run.needs_final_eval:  # ran out of steps (or data), and not already evaluated before a kill
            evaluate(run.step)
        if run.completed:
            run.save_final(metrics)
        summary = run.close({...loop-specific figures...})
"""
from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from codejax.models import count_leaves
from codejax.objectives.variables import REF, ModelVariables
from codejax.parallel import Parallel
from codejax.train.checkpoint import Checkpointer, abstract_like
from codejax.train.console import banner
from codejax.train.guard import SIGNALS, SIGTERM, STOPPED_BY_SIGNAL
from codejax.train.metrics import MetricsWriter, write_plots
from codejax.train.step import init_train_state
from codejax.train.workdir import read_json, write_config, write_json

log = logging.getLogger(__name__)

# Early-stopping record, kept in each checkpoint's metadata so a resumed run continues it.
BEST_KEY, PATIENCE_KEY = "early_stopping/best", "early_stopping/evals_without_gain"
# A non-finite loss this many steps after a resume points at the restored checkpoint.
SUSPECT_RESUME_STEPS = 10


class NonFiniteLossError(FloatingPointError):
    pass


def any_process(flag: bool) -> bool:
    """True on every host if it is True on any: hosts must agree before a collective save."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils
    return bool(np.max(multihost_utils.process_allgather(np.int32(flag))))


def check_batch_split(par: Parallel, batch_size: int, grad_accum_steps: int, what: str = "data.batch_size") -> None:
    devices = par.mesh.shape["data"] * par.mesh.shape["fsdp"]
    micro = batch_size // max(grad_accum_steps, 1)
    if batch_size % max(grad_accum_steps, 1) or micro % devices:
        unit = max(grad_accum_steps, 1) * devices
        fit = max(unit, -(-batch_size // unit) * unit)
        raise ValueError(f"{what}={batch_size} with optim.grad_accum_steps={grad_accum_steps} does not split into "
                         f"{max(grad_accum_steps, 1)} micro-batches of whole rows over the {devices} data x fsdp "
                         f"devices of the mesh: use a multiple of {unit} (e.g. {what}={fit}) or change "
                         "optim.grad_accum_steps")


class Run:
    """An open training run in `workdir`; see the module docstring for the life cycle.

    `data` is the loop's checkpointed input state: anything with get_state() / set_state()
    (a grain iterator, the RL prompt order). `state` is the train state pytree
    {"step", "params", "opt_state", "rng"}, in its shardings; the loop replaces it each step.
    """

    def __init__(self, config, workdir: str, variables: ModelVariables, optimizer, data, parallel: Parallel | None,
                 desc: str = "train"):
        tc = self._tc = config.train
        self.workdir, self.data, self.parallel, self.desc = workdir, data, parallel, desc
        self.is_main = jax.process_index() == 0
        par = parallel
        init = lambda p: init_train_state(p, optimizer, config.seed)  # noqa: E731
        if par is None:
            self.state, self.state_shardings = init(variables.trainable), None
        else:
            self.state_shardings = par.state_shardings(optimizer, abstract_like(variables.trainable),
                                                       variables.trainable_axes)
            with par.context():  # created in place, never whole on one device
                self.state = jax.jit(init, out_shardings=self.state_shardings, donate_argnums=0)(variables.trainable)
        self.frozen = variables.frozen or {}
        self.frozen_shardings = par.param_shardings(variables.frozen_axes) if par is not None and self.frozen else None
        self.place = par.shard_batch if par is not None else (lambda batch: batch)
        self.checkpointer = Checkpointer(
            os.path.join(workdir, "checkpoints"), save_every=tc.checkpoint_every or tc.steps,
            keep_latest=tc.keep_checkpoints, keep_best=tc.keep_best, best_metric=tc.best_metric,
            best_mode=tc.best_mode, async_save=tc.async_checkpoint)
        self.start_step, self.best_eval, self.evals_without_gain = 0, None, 0
        self.last_eval: dict[str, float] = {}
        restored = self.checkpointer.restore_latest(abstract_like(self.state))
        self.restored = restored is not None
        # The last evaluation of a run killed after its final checkpoint but before its summary:
        # kept in that checkpoint, so the rerun does not log it a second time.
        self.final_eval_restored = False
        if restored is not None:
            self.start_step, self.state, data_state, meta = restored
            data.set_state(data_state)
            # Early stopping carries on where it was, not from a blank record.
            self.best_eval = meta.get(BEST_KEY)
            self.evals_without_gain = meta.get(PATIENCE_KEY, 0)
            evals = {k: v for k, v in meta.items() if k.startswith("eval/")}
            if evals and self.start_step >= tc.steps:
                self.last_eval, self.final_eval_restored = evals, True
            log.info("resumed from step %d in %s", self.start_step, workdir)
        if self.is_main:
            write_config(config, workdir)  # only now: a failed restore leaves the old config.json
        trainable = count_leaves(variables.trainable)
        base = count_leaves({k: v for k, v in (variables.frozen or {}).items() if k != REF})
        banner(config, workdir, trainable + base, trainable, parallel, self.start_step)
        self.step = self.start_step
        self.stop_reason = "completed"
        self.finished = self._previous_summary() if restored is not None else None
        self.writer = None
        if self.finished is not None:
            log.info("%s already finished at step %d (%s); nothing to do", workdir, self.start_step,
                     self.finished.get("stop_reason"))
            self.checkpointer.close()
        elif self.is_main:
            # Rows after the restored step (or every row, with no checkpoint) are lost work.
            self.writer = MetricsWriter(workdir, resume_step=self.start_step if restored else -1, config=config)
        self._signals = SIGNALS.handling(defer=True)
        self._bar = None
        self._start_time = time.time()

    def _previous_summary(self) -> dict | None:
        """The summary of a run that is over: same step, same train.steps and not preempted.
        (A larger train.steps means the user asks for more, so training continues.)"""
        previous = read_json(os.path.join(self.workdir, "summary.json"))  # a torn one: not finished
        if (previous and previous.get("steps") == self.start_step and previous.get("train_steps") == self._tc.steps
                and previous.get("stop_reason") not in STOPPED_BY_SIGNAL):
            return previous
        return None

    # ------------------------------------------------------------------ context: the stop signals and the progress bar

    def __enter__(self) -> "Run":
        self._signals.__enter__()  # from here a signal only sets a flag the loop checks after each step
        return self

    def __exit__(self, *exc) -> None:
        self._signals.__exit__(*exc)
        if self._bar is not None:
            self._bar.close()

    def progress(self, **postfix) -> None:
        """Advance the progress bar by one step (created on first use, after any eval at start)."""
        if self._bar is None:
            self._bar = tqdm(total=self._tc.steps, initial=self.start_step, desc=self.desc, dynamic_ncols=True,
                             disable=not (self._tc.progress_bar and self.is_main))
        self._bar.update(1)
        if postfix:
            self._bar.set_postfix(**postfix)

    # ------------------------------------------------------------------ per step

    def log(self, step: int, row: dict) -> None:
        if self.writer is not None:
            self.writer.write(step, row)

    def check_finite(self, metrics: dict, step: int) -> None:
        """Never checkpoint a diverged state: the last good checkpoint must stay the newest.

        The loss is computed before the update, so a NaN/Inf gradient (which poisons
        the new params) shows only in grad_norm at that step.
        """
        for key in ("loss", "grad_norm"):
            if metrics and key in metrics and not math.isfinite(float(metrics[key])):
                self.checkpointer.wait()
                last = self.checkpointer.latest_step()
                value = float(metrics[key])
                if self.restored and step - self.start_step <= SUSPECT_RESUME_STEPS:
                    # So soon after a resume the restored checkpoint is the likely cause, not the lr.
                    raise NonFiniteLossError(
                        f"{key} is {value} at step {step}, {step - self.start_step} steps after resuming from "
                        f"checkpoint step {self.start_step} in {self.checkpointer.directory}; that checkpoint may "
                        f"be damaged: move {os.path.join(self.checkpointer.directory, str(self.start_step))} "
                        "aside to resume from the one before it, or lower optim.lr")
                kept = (f"The last good checkpoint (step {last}) is kept in {self.checkpointer.directory}"
                        if last is not None else "No checkpoint had been saved yet")
                raise NonFiniteLossError(f"{key} is {value} at step {step}; stopping. {kept}; "
                                         "lower optim.lr or raise optim.warmup_steps, or check the data")

    def evaluate(self, step: int, metrics: dict[str, float]) -> bool:
        """Log an evaluation and track the best `train.best_metric`; True when the patience has run out
        (the loop then calls `stop_early`)."""
        tc = self._tc
        self.last_eval = metrics
        if self.writer is not None:
            self.writer.write(step, metrics)
            write_plots(self.writer.path, os.path.join(self.workdir, "plots"))
        value = metrics.get(tc.best_metric)
        if value is None:  # no metric this time (e.g. an empty eval set): nothing to count
            return False
        if self.best_eval is None or (value < self.best_eval if tc.best_mode == "min" else value > self.best_eval):
            self.best_eval, self.evals_without_gain = value, 0
        else:
            self.evals_without_gain += 1
        return bool(tc.early_stopping_patience) and self.evals_without_gain >= tc.early_stopping_patience

    def stop_early(self) -> None:
        tc = self._tc
        self.stop_reason = (f"early stopping: {tc.best_metric} did not improve in "
                            f"{tc.early_stopping_patience} evaluations")
        self.save(self.step, force=True, with_eval=True)

    def save(self, step: int, force: bool = False, with_eval: bool = False) -> None:
        if step in self.checkpointer.all_steps():  # e.g. a restart of a run that had already finished
            return
        meta = {**(self.last_eval if with_eval else {}), BEST_KEY: self.best_eval,
                PATIENCE_KEY: self.evals_without_gain}
        self.checkpointer.save(step, self.state, self.data.get_state(), metrics=meta, force=force)

    def maybe_save(self, step: int, metrics: dict, evaluated: bool) -> None:
        """The periodic checkpoint (train.checkpoint_every), never of a diverged state."""
        every = self._tc.checkpoint_every
        if every and step % every == 0 and step < self._tc.steps:
            self.check_finite(metrics, step)
            self.save(step, with_eval=evaluated)

    def end_step(self, step: int, metrics: dict, evaluate) -> bool:
        """After a step: evaluate when due (`evaluate(step)` returns True when the patience has run
        out), then stop early, stop on SIGTERM, or checkpoint when due. True when the loop must stop."""
        tc = self._tc
        evaluated = bool(tc.eval_every) and step % tc.eval_every == 0 and step < tc.steps
        self.checkpointer.check_for_errors()  # a failed background save stops the run now, not at the next one
        if evaluated and evaluate(step):
            self.stop_early()
            return True
        if self.preempted(evaluated):
            return True
        self.maybe_save(step, metrics, evaluated)
        return False

    @property
    def stop_requested(self) -> bool:
        """True on every host once SIGINT or SIGTERM reached any of them."""
        return any_process(SIGNALS.received is not None)

    def preempted(self, evaluated: bool) -> bool:
        """After SIGINT/SIGTERM on any host: save a checkpoint of this step on all of them, and stop."""
        if not self.stop_requested:
            return False
        self.stop_reason = SIGNALS.received or SIGTERM  # another host's signal: a preemption
        self.save(self.step, force=True, with_eval=evaluated)
        log.warning("%s: saved a checkpoint at step %d and stopped; rerun the same command to resume",
                    self.stop_reason, self.step)
        return True

    # ------------------------------------------------------------------ the end

    @property
    def completed(self) -> bool:
        """The run ended by running out of steps (or data), not by early stopping or preemption."""
        return self.stop_reason == "completed" or self.stop_reason.startswith("data exhausted")

    @property
    def needs_final_eval(self) -> bool:
        return self.completed and not self.final_eval_restored

    def save_final(self, metrics: dict) -> None:
        self.check_finite(metrics, self.step)
        self.save(self.step, force=True, with_eval=bool(self.last_eval))

    def close(self, figures: dict[str, Any]) -> dict[str, Any]:
        """Wait for the checkpoints, write summary.json (process 0) and return the summary."""
        self.checkpointer.wait()
        summary = {"steps": self.step, "train_steps": self._tc.steps, "stop_reason": self.stop_reason, **figures,
                   "seconds_this_run": time.time() - self._start_time, "best_eval": self.best_eval,
                   "last_eval": self.last_eval, "best_checkpoint_step": self.checkpointer.best_step()}
        if self.writer is not None:
            self.writer.close(summary)
            write_plots(self.writer.path, os.path.join(self.workdir, "plots"))
            write_json(os.path.join(self.workdir, "summary.json"), summary)
        self.checkpointer.close()
        return summary
