"""Experiment trackers: where a run's metrics go besides metrics.jsonl.

Every tracker has the same three calls, made by MetricsWriter (codejax/train/metrics.py) on
process 0 only:

    start(config, workdir, resume_step)   once, before the first row
    log(step, row)                        each logged row: {"train/loss": 1.2, ...}, floats only
    finish(summary)                       once, with the run's summary (summary.json) or None

`trackers_for(config)` picks them from the train section:

  - TensorBoard, always: scalars in WORKDIR/tensorboard, and at the end the flattened config as
    HParams (hparams plugin data) with the summary's figures as its metrics, so the HParams
    dashboard compares the workdirs below a `tensorboard --logdir`.
  - Weights & Biases when `train.wandb_project` is set (an optional extra:
    `pip install 'codejax[wandb]'`). `train.wandb_mode=offline` needs no network; the run then
    lives in WORKDIR/wandb (or `train.wandb_dir`/wandb) and `wandb sync` uploads it later.

metrics.jsonl stays the source of truth; the trackers are copies. W&B keeps the first value it
got for a step, so after a crash the steps between the restored checkpoint and the crash keep
their pre-crash values there, while metrics.jsonl and TensorBoard show the rerun's.
No tracker writes an API key anywhere: W&B reads WANDB_API_KEY or `wandb login`'s netrc itself.
"""
from __future__ import annotations

import math
import os
import re
import secrets
import string
from typing import Any, Protocol

from tensorboardX import SummaryWriter
from tensorboardX.summary import hparams as hparams_summaries

from codejax.train.config_diff import flatten
from codejax.train.workdir import read_jsonl, write_text

WANDB_MODES = ("online", "offline", "disabled")
# Where the W&B run id lives, so that a resumed run continues the same W&B run.
WANDB_ID_FILE = "wandb_run_id"
SUMMARY_PREFIX = "summary/"  # TensorBoard tags of the summary's figures, apart from the logged ones


class TrackingError(ValueError):
    """A tracker cannot start: the message names the config field and the fix (a ValueError, so the
    CLI prints it as one line)."""


class Tracker(Protocol):
    def start(self, config: Any, workdir: str, resume_step: int | None) -> None: ...

    def log(self, step: int, row: dict[str, float]) -> None: ...

    def finish(self, summary: dict | None) -> None: ...


def flat_config(config: Any) -> dict[str, Any]:
    """{'optim.lr': 3e-4, ...}: the names of --config.optim.lr, values JSON-plain (tuples as strings)."""
    if config is None:
        return {}
    tree = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return {k: v if v is None or isinstance(v, (bool, int, float, str)) else str(v)
            for k, v in flatten(tree).items()}


def summary_figures(summary: dict | None) -> dict[str, float]:
    """The summary's finite numbers, nested dicts joined with '/': {'best_eval': 0.4, 'last_eval/eval/loss': 0.4}."""
    out: dict[str, float] = {}

    def walk(tree: dict, prefix: str) -> None:
        for key, value in tree.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}/")
            elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out[f"{prefix}{key}"] = float(value)

    walk(summary or {}, "")
    return out


def _train_field(config: Any, name: str, default: Any) -> Any:
    train = config.get("train") if config is not None and hasattr(config, "get") else None
    return train.get(name, default) if train is not None else default


class TensorBoardTracker:
    """Scalars as they come; at finish the config as HParams, written into the same run as the scalars
    so the dashboard's metric columns are the run's own tags (their last values) and the summary's."""

    def __init__(self, logdir_name: str = "tensorboard"):
        self.logdir_name = logdir_name
        self._writer: SummaryWriter | None = None
        self._hparams: dict[str, Any] = {}
        self._workdir = ""

    def start(self, config: Any, workdir: str, resume_step: int | None) -> None:
        del resume_step  # TensorBoard drops the orphaned steps of a restarted run itself
        self._workdir = workdir
        self._hparams = flat_config(config)
        self._writer = SummaryWriter(os.path.join(workdir, self.logdir_name))

    def log(self, step: int, row: dict[str, float]) -> None:
        for key, value in row.items():
            self._writer.add_scalar(key, value, step)

    def finish(self, summary: dict | None) -> None:
        if self._hparams and summary is not None:  # None: the run never got going (or a caller without one)
            figures = {SUMMARY_PREFIX + k: v for k, v in summary_figures(summary).items()}
            step = int((summary or {}).get("steps") or 0)
            for tag, value in figures.items():
                self._writer.add_scalar(tag, value, step)
            # Every tag of the whole run (metrics.jsonl, earlier segments included), not only this segment's.
            logged = {k for row in read_jsonl(os.path.join(self._workdir, "metrics.jsonl")) for k, v in row.items()
                      if k != "step" and isinstance(v, (int, float))}
            metrics = {**dict.fromkeys(sorted(logged), 0.0), **figures}  # only the names are used
            for event in hparams_summaries(self._hparams, metrics):
                self._writer.file_writer.add_summary(event)
        self._writer.close()


def _import_wandb():
    try:
        import wandb  # noqa: PLC0415  (optional: only runs that name a W&B project need it)
    except ImportError as e:
        raise TrackingError("train.wandb_project is set but wandb is not installed: "
                            "pip install 'codejax[wandb]' (or set train.wandb_project='')") from e
    return wandb


def new_run_id() -> str:
    """8 characters of [a-z0-9], W&B's own id format."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def wandb_run_id(workdir: str, resume_step: int | None) -> str:
    """The W&B run id kept in WORKDIR/wandb_run_id. A fresh start (resume_step -1: nothing restored, every
    row dropped) gets a new one, since W&B would ignore steps its old run already has; a resume (or
    resume_step None: append) continues the stored one."""
    path = os.path.join(workdir, WANDB_ID_FILE)
    if resume_step != -1 and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            stored = f.read().strip()
        if re.fullmatch(r"[A-Za-z0-9_-]+", stored):
            return stored
    run_id = new_run_id()
    write_text(path, run_id + "\n")
    return run_id


class WandbTracker:
    """One W&B run per workdir: the flattened config, each row at its step, the summary at the end."""

    def __init__(self):
        self._run = None

    def start(self, config: Any, workdir: str, resume_step: int | None) -> None:
        wandb = _import_wandb()
        mode = _train_field(config, "wandb_mode", "online")
        run_dir = _train_field(config, "wandb_dir", "") or workdir
        os.makedirs(run_dir, exist_ok=True)  # W&B writes run_dir/wandb/<run>
        try:
            self._run = wandb.init(
                project=_train_field(config, "wandb_project", ""),
                entity=_train_field(config, "wandb_entity", "") or None,
                mode=mode, dir=run_dir,
                name=_train_field(config, "wandb_run_name", "") or os.path.basename(os.path.normpath(workdir)),
                id=wandb_run_id(workdir, resume_step),
                resume="allow",
                config=flat_config(config),
                allow_val_change=True)  # a resume may change "allowed" fields (codejax/train/config_diff.py)
        except wandb.errors.Error as e:  # no API key, no network, a project one may not write to, ...
            raise TrackingError(f"train.wandb_project={_train_field(config, 'wandb_project', '')!r}: W&B did not "
                                f"start ({' '.join(str(e).split())}); run `wandb login`, or set "
                                "train.wandb_mode=offline (no network; `wandb sync` uploads later)") from e

    def log(self, step: int, row: dict[str, float]) -> None:
        self._run.log(row, step=step)

    def finish(self, summary: dict | None) -> None:
        if summary:
            self._run.summary.update({k: v for k, v in summary.items() if v is not None})
        self._run.finish()


def trackers_for(config: Any) -> list[Tracker]:
    """TensorBoard always; W&B when train.wandb_project is set and train.wandb_mode is not 'disabled'."""
    trackers: list[Tracker] = [TensorBoardTracker()]
    mode = _train_field(config, "wandb_mode", "online")
    if mode not in WANDB_MODES:
        raise TrackingError(f"train.wandb_mode={mode!r}: expected one of {', '.join(WANDB_MODES)}")
    if _train_field(config, "wandb_project", "") and mode != "disabled":
        trackers.append(WandbTracker())
    return trackers
