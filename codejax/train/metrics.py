"""Metric sinks for a workdir: metrics.jsonl, TensorBoard event files and PNG plots.

metrics.jsonl holds one JSON object per logged step ({"step": n, "train/loss": ...});
it is the source of truth that plots and resumption read back. On resume the
rows after the restored step are dropped, so a restarted run's file reads as if
it had never stopped.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: CI, TPU VMs and Colab all lack a display
import matplotlib.pyplot as plt  # noqa: E402
from tensorboardX import SummaryWriter  # noqa: E402


def _plain(value: Any) -> Any:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return value
    return value if math.isfinite(value) else str(value)


class MetricsWriter:
    """Appends metrics to metrics.jsonl and TensorBoard. Only process 0 should write."""

    def __init__(self, workdir: str, resume_step: int | None = None):
        self.path = os.path.join(workdir, "metrics.jsonl")
        os.makedirs(workdir, exist_ok=True)
        if resume_step is not None:
            truncate_after(self.path, resume_step)
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        for key, value in row.items():
            if key != "step" and isinstance(value, float):
                self._tb.add_scalar(key, value, int(step))

    def close(self) -> None:
        self._tb.close()


def read_metrics(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def truncate_after(path: str, step: int) -> None:
    """Drop rows logged after `step` (they belong to work lost in a crash)."""
    rows = [r for r in read_metrics(path) if r["step"] <= step]
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


# (file name, title, metric keys drawn on it)
PLOTS = (
    ("loss.png", "Loss", ("train/loss", "eval/loss")),
    ("eval.png", "Evaluation", ("eval/loss", "eval/perplexity")),
    ("learning_rate.png", "Learning rate", ("train/lr",)),
)


def write_plots(metrics_path: str, plot_dir: str) -> list[str]:
    """Draw the standard curves from metrics.jsonl; returns the files written."""
    rows = read_metrics(metrics_path)
    os.makedirs(plot_dir, exist_ok=True)
    written = []
    for filename, title, keys in PLOTS:
        fig, axes = plt.subplots(figsize=(6, 3.5))
        drawn = False
        for key in keys:
            points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if points:
                steps, values = zip(*points)
                axes.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3, label=key)
                drawn = True
        if not drawn:
            axes.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=axes.transAxes)
        axes.set_title(title)
        axes.set_xlabel("step")
        if drawn:
            axes.legend()
        axes.grid(alpha=0.3)
        fig.tight_layout()
        out = os.path.join(plot_dir, filename)
        fig.savefig(out, dpi=100)
        plt.close(fig)
        written.append(out)
    return written
