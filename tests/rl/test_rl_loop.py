"""The RL loop runs on the run scaffold: early stopping, non-finite checks and SIGTERM behave as in the LM loop.

A random tiny policy on the arithmetic environment: its greedy eval reward is the same at every
evaluation, which is what early stopping needs to trigger deterministically.
"""
import json
import os
import re
import signal
import threading
import time

import pytest

from codejax.config import load_config_file
from codejax.jobs import get_job
from codejax.train.metrics import read_metrics
from codejax.train.run import NonFiniteLossError

pytestmark = pytest.mark.slow


def _config(arith_dir, name="grpo_code", **fields):
    config = load_config_file(f"configs/{name}.py:tiny")
    config.tokenizer.path = str(arith_dir / "tokenizer")
    config.train.progress_bar = False
    config.train.async_checkpoint = False
    config.train.log_every = 1
    for dotted, value in fields.items():
        section, name = dotted.split(".")
        setattr(getattr(config, section), name, value)
    return config


def _checkpoint_steps(workdir) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_rl_early_stopping_after_patience(arith_dir, tmp_path):
    config = _config(arith_dir, **{"train.steps": 20, "train.eval_every": 2, "train.checkpoint_every": 2,
                                   "train.early_stopping_patience": 1, "optim.lr": 0.0})
    summary = get_job("grpo")(config, str(tmp_path))
    # lr = 0: the eval at step 2 sets the best reward, the one at step 4 does not improve on it.
    assert summary["steps"] == 4 and summary["stop_reason"].startswith("early stopping: eval/reward")
    assert 4 in _checkpoint_steps(tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text())["stop_reason"] == summary["stop_reason"]


def test_rl_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(arith_dir, tmp_path):
    # An absurd learning rate turns the weights to inf after the first update; the next loss is NaN.
    # (PPO: the missing-EOS penalty gives the value loss a gradient even from a random policy.)
    config = _config(arith_dir, "ppo", **{"train.steps": 6, "train.eval_every": 0, "train.checkpoint_every": 1,
                                          "optim.lr": 1e30, "rl.epochs": 1, "rl.minibatches": 1})
    with pytest.raises(NonFiniteLossError, match=r"nan at step 2.*last good checkpoint \(step 1\)"):
        get_job("ppo")(config, str(tmp_path))
    assert _checkpoint_steps(tmp_path) == [1]


def test_rl_sigterm_saves_a_checkpoint_and_stops(arith_dir, tmp_path):
    config = _config(arith_dir, **{"train.steps": 200, "train.eval_every": 0, "train.checkpoint_every": 0})
    metrics = tmp_path / "metrics.jsonl"

    def preempt():  # like a preemption notice, once training is under way
        while not (metrics.exists() and read_metrics(str(metrics))):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=preempt, daemon=True).start()
    summary = get_job("grpo")(config, str(tmp_path))
    assert summary["stop_reason"] == "SIGTERM" and 1 <= summary["steps"] < 200
    assert _checkpoint_steps(tmp_path) == [summary["steps"]]
    # A rerun resumes from the preemption checkpoint instead of starting over.
    config.train.steps = summary["steps"] + 1
    resumed = get_job("grpo")(config, str(tmp_path))
    assert resumed["steps"] == summary["steps"] + 1 and resumed["stop_reason"] == "completed"
    assert [r["step"] for r in read_metrics(str(metrics)) if "train/reward" in r][-1] == resumed["steps"]


def test_rl_logs_completions_without_duplicates_on_resume_and_plots_rewards(arith_dir, tmp_path):
    config = _config(arith_dir, **{"train.steps": 2, "train.eval_every": 0, "train.checkpoint_every": 1,
                                   "train.eval_at_start": True, "rl.log_completions": 3})
    get_job("grpo")(config, str(tmp_path))
    path = tmp_path / "completions.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 1, 1, 2, 2, 2]
    assert set(rows[0]) == {"step", "prompt", "completion", "reward", "rewards"}
    assert set(rows[0]["rewards"]) == {"unit_tests"} and rows[0]["prompt"].startswith("def f(")
    # A crash after logging step 3 but before its checkpoint: the rerun logs step 3 again, once.
    with path.open("a") as f:
        f.write(json.dumps({**rows[-1], "step": 3, "completion": "lost work"}) + "\n")
    config.train.steps = 3
    get_job("grpo")(config, str(tmp_path))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert "lost work" not in path.read_text()
    # The sampler's log-probs of the rollout tokens agree with the trainer's (both fp32, same weights).
    logged = [r for r in read_metrics(str(tmp_path / "metrics.jsonl")) if "train/logprob_diff/max" in r]
    assert logged and all(0 <= r["train/logprob_diff/mean"] <= r["train/logprob_diff/max"] < 1e-3 for r in logged)
    # GRPO's plots: the reward curves (train and the eval at start), not the LM loss/perplexity set.
    assert sorted(p.name for p in (tmp_path / "plots").glob("*.png")) == [
        "clip_fraction.png", "completion_length.png", "kl.png", "learning_rate.png", "reward.png"]


@pytest.mark.parametrize("field, value, match", [
    ("rl.scale_rewards", "groups", "rl.scale_rewards='groups'; expected one of group, batch, none"),
    ("rl.loss_agg", "token", "rl.loss_agg='token'; expected one of grpo, bnpo, dapo, dr_grpo"),
    ("rl.tis_cap", 0.5, "rl.tis_cap=0.5: the importance-weight cap must be >= 1"),
])
def test_rl_settings_are_checked_before_any_work(arith_dir, tmp_path, field, value, match):
    config = _config(arith_dir, **{field: value})
    with pytest.raises(ValueError, match=re.escape(match)):
        get_job("grpo")(config, str(tmp_path))


def test_overlap_generates_the_next_step_while_updating_on_the_same_prompt_stream(arith_dir, tmp_path):
    """rl.overlap: step k+1's rollouts come from the weights before step k's update (one step stale),
    on the same prompts as without overlap; the stale sampler shows in logprob_diff and TIS corrects it."""
    from codejax.rl.rewards import REWARDS, register_reward
    if "test_rl_loop_length" not in REWARDS:  # varies with the completion: the update has a gradient
        register_reward("test_rl_loop_length")(lambda prompts, completions, **_: [len(c) / 10 for c in completions])
    runs = {}
    for overlap in (False, True):
        config = _config(arith_dir, **{"train.steps": 3, "train.eval_every": 0, "train.checkpoint_every": 0,
                                       "train.eval_at_start": False, "rl.log_completions": 16, "rl.overlap": overlap,
                                       "rl.kl_coef": 0.0, "rl.rewards": "test_rl_loop_length"})
        get_job("grpo")(config, str(tmp_path / str(overlap)))
        rows = [json.loads(line) for line in (tmp_path / str(overlap) / "completions.jsonl").read_text().splitlines()]
        runs[overlap] = (rows, {r["step"]: r for r in read_metrics(str(tmp_path / str(overlap) / "metrics.jsonl"))
                                if "train/loss" in r})
    (plain_rows, plain), (over_rows, over) = runs[False], runs[True]
    assert [(r["step"], r["prompt"]) for r in plain_rows] == [(r["step"], r["prompt"]) for r in over_rows]
    step1 = [r for r in plain_rows if r["step"] == 1], [r for r in over_rows if r["step"] == 1]
    assert step1[0] == step1[1]  # step 1 samples the initial weights either way
    assert all(m["train/logprob_diff/max"] < 1e-3 for m in plain.values())
    assert "train/tis_weight/mean" not in plain[2] and "train/tis_weight/mean" in over[2]  # cap 2.0 by default
    assert over[2]["train/logprob_diff/max"] > 1e-3  # sampled before step 1's update (lr 1e-3 moves it)
    for m in over.values():
        assert {"train/time/generation_s", "train/time/reward_s", "train/time/score_s", "train/time/update_s",
                "train/time/wait_s"} <= set(m)
