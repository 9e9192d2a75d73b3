"""Metric sinks for a workdir: metrics.jsonl, the experiment trackers (TensorBoard, W&B) and PNG plots.

metrics.jsonl holds one JSON object per logged step ({"step": n, "train/loss": ...});
it is the source of truth that plots and resumption read back. On resume the
rows after the restored step are dropped, so a restarted run's file reads as if
it had never stopped. The plots are those of the job's kind (LM, preference or RL
jobs: `PLOTS`), picked from the metric keys the file has.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: CI, TPU VMs and Colab all lack a display
import matplotlib.pyplot as plt  # noqa: E402

from codejax.train.tracking import trackers_for  # noqa: E402
from codejax.train.workdir import read_jsonl, write_text  # noqa: E402


def _plain(value: Any) -> Any:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return value
    return value if math.isfinite(value) else str(value)


class MetricsWriter:
    """Appends metrics to metrics.jsonl and hands each row to the experiment trackers
    (codejax/train/tracking.py: TensorBoard always, W&B when train.wandb_project is set).
    Only process 0 should write.

    `config` (the run's ConfigDict) picks the trackers and is what they record as the run's
    settings; `close(summary)` gives them the final figures. `resume_step`: None appends to
    what is there, -1 starts afresh (every row dropped), n >= 0 resumes after step n."""

    def __init__(self, workdir: str, resume_step: int | None = None, config=None):
        self.path = os.path.join(workdir, "metrics.jsonl")
        os.makedirs(workdir, exist_ok=True)
        if resume_step is not None:
            truncate_after(self.path, resume_step)
        self.config = config
        self.trackers = []
        try:
            for tracker in trackers_for(config):
                tracker.start(config, workdir, resume_step)
                self.trackers.append(tracker)
        except BaseException:
            self.close()  # a tracker that cannot start must not leave the others' files open
            raise

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        numbers = {k: v for k, v in row.items() if k != "step" and isinstance(v, float)}
        for tracker in self.trackers:
            tracker.log(int(step), numbers)

    def close(self, summary: dict | None = None) -> None:
        """Finish every tracker, even when one fails (the first failure is raised after)."""
        error = None
        for tracker in self.trackers:
            try:
                tracker.finish(summary)
            except Exception as e:  # noqa: BLE001
                error = error or e
        self.trackers = []
        if error is not None:
            raise error


def read_metrics(path: str) -> list[dict[str, Any]]:
    """metrics.jsonl's rows; a torn line (a kill or a full disk mid-write) is dropped with a warning."""
    return [r for r in read_jsonl(str(path)) if isinstance(r, dict) and isinstance(r.get("step"), int)]


def truncate_after(path: str, step: int) -> None:
    """Drop rows logged after `step` (they belong to work lost in a crash), atomically: a kill
    during the rewrite leaves the old file, never a shortened one."""
    if not os.path.exists(path):
        return
    rows = [r for r in read_metrics(path) if r["step"] <= step]
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


@dataclasses.dataclass(frozen=True)
class Plot:
    filename: str
    title: str
    keys: tuple[str, ...]  # the metric keys drawn on it, those present in metrics.jsonl


_LR = Plot("learning_rate.png", "Learning rate", ("train/lr",))

# The plots of each kind of job. Perplexity is exp(an LM loss): only LM jobs have it.
PLOTS: dict[str, tuple[Plot, ...]] = {
    "lm": (
        Plot("loss.png", "Loss", ("train/loss", "eval/loss")),
        Plot("eval.png", "Evaluation", ("eval/loss", "eval/perplexity")),
        _LR,
    ),
    # Reward models log accuracy and rewards/*; DPO logs rewards/accuracy and rewards/* (implicit rewards).
    "preference": (
        Plot("loss.png", "Preference loss", ("train/loss", "eval/loss")),
        Plot("accuracy.png", "Accuracy (chosen scored above rejected)",
             ("train/accuracy", "eval/accuracy", "train/rewards/accuracy", "eval/rewards/accuracy")),
        Plot("margin.png", "Reward margin (chosen - rejected)", ("train/rewards/margin", "eval/rewards/margin")),
        Plot("rewards.png", "Chosen and rejected rewards",
             ("train/rewards/chosen", "train/rewards/rejected", "eval/rewards/chosen", "eval/rewards/rejected")),
        _LR,
    ),
    "rl": (
        Plot("reward.png", "Reward", ("train/reward", "eval/reward")),
        # kl: to the reference (with a KL term); approx_kl: to the policy that sampled the rollouts
        Plot("kl.png", "KL", ("train/kl", "train/approx_kl")),
        Plot("completion_length.png", "Completion length (tokens)",
             ("train/completion_length", "eval/completion_length")),
        Plot("clip_fraction.png", "Clip fraction", ("train/clip_frac/region", "train/value/clip_frac")),
        _LR,
    ),
}

# Which plots a metrics file gets when no job is named: the first kind one of whose keys it has.
DETECT: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("rl", ("train/reward", "eval/reward")),
    ("preference", ("train/accuracy", "eval/accuracy", "train/rewards/accuracy", "eval/rewards/accuracy")),
)
DEFAULT_KIND = "lm"
# config.job -> kind, for write_plots(job=...)
JOB_PLOTS = {"pretrain": "lm", "sft": "lm", "quickstart": "lm", "reward": "preference", "dpo": "preference",
             "grpo": "rl", "ppo": "rl"}


def plot_kind(rows: list[dict[str, Any]], job: str | None = None) -> str:
    """The PLOTS kind for `job` (a config.job name), or with no job the one the metric keys show."""
    if job is not None:
        if job not in JOB_PLOTS:
            raise ValueError(f"write_plots: job={job!r} has no plots; known: {sorted(JOB_PLOTS)} "
                             "(or job=None to pick them from the metric keys)")
        return JOB_PLOTS[job]
    keys = {k for r in rows for k in r}
    return next((kind for kind, markers in DETECT if keys.intersection(markers)), DEFAULT_KIND)


def write_plots(metrics_path: str, plot_dir: str, job: str | None = None) -> dict[str, tuple[str, ...]]:
    """Draw the curves of the job's kind (PLOTS; `job` None: picked from the metric keys) from
    metrics.jsonl. Returns {file written: the keys drawn on it}; () means the "no data yet" placeholder."""
    rows = read_metrics(metrics_path)
    os.makedirs(plot_dir, exist_ok=True)
    written: dict[str, tuple[str, ...]] = {}
    for plot in PLOTS[plot_kind(rows, job)]:
        fig, axes = plt.subplots(figsize=(6, 3.5))
        drawn = []
        for key in plot.keys:
            points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if points:
                steps, values = zip(*points)
                axes.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3, label=key)
                drawn.append(key)
        if not drawn:
            axes.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=axes.transAxes)
        axes.set_title(plot.title)
        axes.set_xlabel("step")
        if drawn:
            axes.legend()
        axes.grid(alpha=0.3)
        fig.tight_layout()
        out = os.path.join(plot_dir, plot.filename)
        fig.savefig(out, dpi=100)
        plt.close(fig)
        written[out] = tuple(drawn)
    return written
