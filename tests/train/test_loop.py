"""The real training loop end to end: workdir layout, exact resume after SIGKILL, SIGTERM, NaN, early stop."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from codejax.config import load_config_file
from codejax.data import ALPACA_PROMPT
from codejax.jobs import get_job
from codejax.models import Transformer, init_params, tiny_config
from codejax.tokenizer import train_code_tokenizer
from codejax.objectives.lm import lm_loss_fn
from codejax.objectives.variables import ModelVariables
from codejax.train.loop import TrainInputs, run_training
from codejax.train.metrics import read_metrics
from codejax.train.run import NonFiniteLossError

ROOT = Path(__file__).resolve().parents[2]
SFT_CONFIG = str(ROOT / "configs" / "sft.py")


@pytest.fixture(scope="module")
def sft_files(tmp_path_factory):
    """A tokenizer directory and an alpaca JSONL file with a learnable pattern."""
    root = tmp_path_factory.mktemp("sft_data")
    rows = []
    for i in range(120):
        a, b = i % 11, i % 7
        rows.append({"instruction": f"Write a function that adds {a} and {b}.",
                     "input": f"def add_{a}_{b}():", "output": f"    return {a} + {b}\n"})
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    texts = [ALPACA_PROMPT.format(**r) + r["output"] for r in rows]
    tokenizer = train_code_tokenizer(texts * 3, vocab_size=400)
    tokenizer.save_pretrained(root / "tokenizer")
    return {"data": str(data), "tokenizer": str(root / "tokenizer")}


def _overrides(sft_files, **extra):
    base = {"data.train_paths": sft_files["data"], "tokenizer.path": sft_files["tokenizer"],
            "data.eval_fraction": 0.1, "train.progress_bar": False,
            "model.num_layers": 2}
    base.update(extra)
    return base


def _config(sft_files, **extra):
    config = load_config_file(f"{SFT_CONFIG}:tiny")
    for dotted, value in _overrides(sft_files, **extra).items():
        section, field = dotted.split(".")
        setattr(getattr(config, section), field, value)
    return config


def _cli(sft_files, workdir, **extra):
    flags = [f"--config.{k}={v}" for k, v in _overrides(sft_files, **extra).items()]
    return [sys.executable, "-m", "codejax.main", f"--config={SFT_CONFIG}:tiny", f"--workdir={workdir}", *flags]


def _losses(workdir):
    return {r["step"]: r["train/loss"] for r in read_metrics(os.path.join(workdir, "metrics.jsonl"))
            if "train/loss" in r}


@pytest.mark.slow
def test_sft_run_writes_the_workdir_and_learns(sft_files, tmp_path):
    summary = get_job("sft")(_config(sft_files, **{"train.steps": 30, "train.log_every": 5}), str(tmp_path))
    assert (tmp_path / "config.json").exists() and (tmp_path / "summary.json").exists()
    assert json.loads((tmp_path / "config.json").read_text())["optim"]["lr"] == 1e-3
    assert sorted(p.name for p in (tmp_path / "plots").glob("*.png")) == [
        "eval.png", "learning_rate.png", "loss.png"]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert summary["best_checkpoint_step"] is not None and (tmp_path / "checkpoints").is_dir()
    losses = _losses(tmp_path)
    assert sorted(losses) == [5, 10, 15, 20, 25, 30]
    assert losses[30] < losses[5] - 1.0
    rows = read_metrics(str(tmp_path / "metrics.jsonl"))
    assert any("eval/loss" in r for r in rows) and any("train/tokens_per_s" in r for r in rows)
    assert summary["data"]["examples"] > 0 and summary["stop_reason"] == "completed"


def _wait_for_checkpoint(workdir: Path, step: int, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (workdir / "checkpoints" / str(step)).is_dir() and _losses(workdir).get(step + 1) is not None:
            return
        if proc.poll() is not None:
            raise AssertionError(f"training exited early: {proc.stderr.read()}")
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint {step} after {timeout}s")


@pytest.mark.slow
def test_sigkill_then_restart_gives_identical_losses(sft_files, tmp_path):
    extra = {"train.steps": 16, "train.log_every": 1, "train.checkpoint_every": 4, "train.eval_every": 0}
    reference = tmp_path / "reference"
    subprocess.run(_cli(sft_files, reference, **extra), check=True, cwd=ROOT, capture_output=True, timeout=300)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(sft_files, killed, **extra), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(killed, 8, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert max(_losses(killed)) < 16, "the run must be killed before it finishes"
    subprocess.run(_cli(sft_files, killed, **extra), check=True, cwd=ROOT, capture_output=True, timeout=300)

    expected, got = _losses(reference), _losses(killed)
    assert sorted(got) == list(range(1, 17))
    assert got == expected  # bit-identical float losses, step by step


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_cleanly(sft_files, tmp_path):
    extra = {"train.steps": 400, "train.log_every": 1, "train.checkpoint_every": 4, "train.eval_every": 0}
    # A relative --workdir, as people type it (Orbax itself needs absolute paths).
    proc = subprocess.Popen(_cli(sft_files, "run", **extra), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    tmp_path = tmp_path / "run"
    _wait_for_checkpoint(tmp_path, 4, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stop_reason"] == "SIGTERM" and summary["steps"] < 400
    assert (tmp_path / "checkpoints" / str(summary["steps"])).is_dir()


class _PoisonedBatches:
    """A checkpointable iterator whose batch number `poison_at` has NaN weights."""

    def __init__(self, poison_at: int):
        self.count, self.poison_at = 0, poison_at
        rng = np.random.default_rng(0)
        tokens = rng.integers(0, 512, size=(4, 17)).astype(np.int32)
        self.batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "weights": np.ones((4, 16), np.float32),
                      "segment_ids": np.ones((4, 16), np.int32),
                      "positions": np.tile(np.arange(16, dtype=np.int32), (4, 1))}

    def __next__(self):
        self.count += 1
        batch = dict(self.batch)
        if self.count == self.poison_at:
            batch["weights"] = np.full((4, 16), np.nan, np.float32)
        return batch

    def get_state(self):
        return {"count": self.count}

    def set_state(self, state):
        self.count = state["count"]


def _tiny_task(train_iter, make_eval_iter=None):
    cfg = tiny_config("llama")
    model = Transformer(cfg)
    variables = ModelVariables({"params": init_params(cfg, jnp.zeros(2, jnp.uint32))}, None)
    return TrainInputs(loss_fn=lm_loss_fn(model), variables=variables, train_iter=train_iter,
                       make_eval_iter=make_eval_iter)


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(sft_files, tmp_path):
    config = _config(sft_files, **{"train.steps": 20, "train.log_every": 1, "train.checkpoint_every": 2,
                                   "train.eval_every": 0, "train.async_checkpoint": False})
    with pytest.raises(NonFiniteLossError, match=r"nan at step 7.*last good checkpoint \(step 6\)"):
        run_training(config, str(tmp_path), _tiny_task(_PoisonedBatches(poison_at=7)))
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())[-1] == 6


def test_early_stopping_after_patience(sft_files, tmp_path):
    poisoned = _PoisonedBatches(poison_at=-1)
    config = _config(sft_files, **{"train.steps": 50, "train.eval_every": 2, "train.log_every": 1,
                                   "train.early_stopping_patience": 2, "optim.lr": 0.0,
                                   "optim.schedule": "constant", "optim.warmup_steps": 0})
    summary, _ = run_training(config, str(tmp_path), _tiny_task(poisoned, lambda: iter([poisoned.batch])))
    # lr = 0: the first eval sets the best, the next two do not improve on it.
    assert summary["steps"] == 6 and summary["stop_reason"].startswith("early stopping")


@pytest.mark.slow
def test_early_stopping_record_survives_a_restart(sft_files, tmp_path):
    poisoned = _PoisonedBatches(poison_at=-1)
    overrides = {"train.eval_every": 2, "train.log_every": 1, "train.early_stopping_patience": 3,
                 "optim.lr": 0.0, "optim.schedule": "constant", "optim.warmup_steps": 0,
                 "train.checkpoint_every": 2}
    first, _ = run_training(_config(sft_files, **{"train.steps": 4, **overrides}), str(tmp_path),
                            _tiny_task(poisoned, lambda: iter([poisoned.batch])))
    assert first["stop_reason"] == "completed"  # evals at 2 (best) and 4 (no gain: 1 of 3)
    resumed, _ = run_training(_config(sft_files, **{"train.steps": 50, **overrides}), str(tmp_path),
                              _tiny_task(poisoned, lambda: iter([poisoned.batch])))
    # Evals at 6 and 8 bring the count to 3. A blank record would stop at 12 instead.
    assert resumed["steps"] == 8 and resumed["stop_reason"].startswith("early stopping")


class _FiniteBatches(_PoisonedBatches):
    """Runs out after `limit` batches, like a finite data.num_epochs."""

    def __init__(self, limit: int):
        super().__init__(poison_at=-1)
        self.limit = limit

    def __next__(self):
        if self.count >= self.limit:
            raise StopIteration
        return super().__next__()


def test_data_running_out_ends_the_run_cleanly(sft_files, tmp_path):
    config = _config(sft_files, **{"train.steps": 20, "train.eval_every": 0, "train.log_every": 1})
    batches = _FiniteBatches(limit=5)
    summary, _ = run_training(config, str(tmp_path), _tiny_task(batches, lambda: iter([batches.batch])))
    assert summary["steps"] == 5 and summary["stop_reason"] == "data exhausted after 5 steps"
    assert (tmp_path / "checkpoints" / "5").is_dir() and summary["last_eval"]


def test_missing_eval_metric_never_triggers_early_stopping(sft_files, tmp_path):
    config = _config(sft_files, **{"train.steps": 8, "train.eval_every": 2, "train.log_every": 1,
                                   "train.early_stopping_patience": 1})
    batches = _PoisonedBatches(poison_at=-1)
    empty = dict(batches.batch, weights=np.zeros((4, 16), np.float32))  # an eval set with no loss tokens
    summary, _ = run_training(config, str(tmp_path), _tiny_task(batches, lambda: iter([empty])))
    assert summary["steps"] == 8 and summary["stop_reason"] == "completed"


@pytest.mark.slow
def test_rerunning_a_finished_run_changes_nothing(sft_files, tmp_path):
    config = _config(sft_files, **{"train.steps": 4, "train.eval_every": 2, "train.log_every": 1})
    batches = _PoisonedBatches(poison_at=-1)
    first, _ = run_training(config, str(tmp_path), _tiny_task(batches, lambda: iter([batches.batch])))
    rows = (tmp_path / "metrics.jsonl").read_text()
    again, _ = run_training(config, str(tmp_path), _tiny_task(_PoisonedBatches(poison_at=-1)))
    assert again == json.loads(json.dumps(first, default=str))
    assert (tmp_path / "metrics.jsonl").read_text() == rows


def test_extra_eval_metric_selects_the_best_checkpoint_and_stops_early(sft_files, tmp_path):
    """A task-level metric (pass@k in real runs) can be train.best_metric and drive early stopping."""
    poisoned = _PoisonedBatches(poison_at=-1)
    scores = iter([0.2, 0.5, 0.4, 0.3, 0.1, 0.0])  # best at the second eval (step 4), then worse
    task = _tiny_task(poisoned)
    task.extra_eval = lambda variables: {"eval/pass@1": next(scores)}
    config = _config(sft_files, **{"train.steps": 40, "train.eval_every": 2, "train.checkpoint_every": 2,
                                   "train.best_metric": "eval/pass@1", "train.best_mode": "max",
                                   "train.early_stopping_patience": 2, "train.async_checkpoint": False})
    summary, _ = run_training(config, str(tmp_path), task)
    assert summary["best_eval"] == 0.5 and summary["best_checkpoint_step"] == 4
    assert summary["steps"] == 8 and summary["stop_reason"].startswith("early stopping")
