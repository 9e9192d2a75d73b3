"""Plots that fit the job: each kind of job (LM, preference, RL) gets its own curves, picked from
the metric keys in metrics.jsonl, and a plot with data is never the "no data yet" placeholder."""
import json

import pytest

from codejax.train.metrics import write_plots

# Rows shaped like each job's metrics.jsonl (keys as the loops log them).
LM = [{"step": s, "train/loss": 3.0 / s, "train/lr": 1e-3, "train/perplexity": 20.0 / s} for s in (1, 2, 3)] + [
    {"step": 3, "eval/loss": 1.2, "eval/perplexity": 3.3, "eval/tokens": 4096.0}]
DPO = [{"step": s, "train/loss": 0.69, "train/lr": 1e-4, "train/rewards/accuracy": 0.5, "train/rewards/margin": 0.1,
        "train/rewards/chosen": 0.2, "train/rewards/rejected": 0.1, "train/logps/chosen": -20.0,
        "train/perplexity": 2.0} for s in (1, 2)] + [
    {"step": 2, "eval/loss": 0.7, "eval/perplexity": 2.0, "eval/tokens": 51.0, "eval/rewards/accuracy": 0.3,
     "eval/rewards/margin": -0.01, "eval/rewards/chosen": 0.0, "eval/rewards/rejected": 0.01}]
REWARD_MODEL = [{"step": 1, "train/loss": 0.69, "train/lr": 1e-4, "train/accuracy": 0.56, "train/rewards/chosen": -0.2,
                 "train/rewards/rejected": -0.3, "train/rewards/margin": 0.1},
                {"step": 1, "eval/loss": 0.8, "eval/perplexity": 2.2, "eval/accuracy": 0.33}]
GRPO = [{"step": 0, "eval/reward": 0.1, "eval/completion_length": 4.0, "eval/rewards/unit_tests": 0.1}] + [
    {"step": s, "train/reward": 0.1 * s, "train/completion_length": 4.0, "train/rewards/unit_tests": 0.1,
     "train/zero_spread_fraction": 0.5, "train/approx_kl": 0.0, "train/clip_frac/region": 0.0, "train/loss": 0.0,
     "train/lr": 1e-3} for s in (1, 2)] + [{"step": 2, "eval/reward": 0.3, "eval/completion_length": 5.0}]


def _plots(tmp_path, rows, **kw):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    written = write_plots(str(metrics), str(tmp_path / "plots"), **kw)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(p.rsplit("/", 1)[-1] for p in written)
    return {p.rsplit("/", 1)[-1]: keys for p, keys in written.items()}


def test_lm_job_plots_loss_perplexity_and_lr(tmp_path):
    assert _plots(tmp_path, LM) == {"loss.png": ("train/loss", "eval/loss"),
                                    "eval.png": ("eval/loss", "eval/perplexity"),
                                    "learning_rate.png": ("train/lr",)}


@pytest.mark.parametrize("rows,accuracy", [(DPO, ("train/rewards/accuracy", "eval/rewards/accuracy")),
                                           (REWARD_MODEL, ("train/accuracy", "eval/accuracy"))], ids=["dpo", "reward"])
def test_preference_jobs_plot_accuracy_margin_and_rewards_not_perplexity(tmp_path, rows, accuracy):
    plots = _plots(tmp_path, rows)
    assert set(plots) == {"loss.png", "accuracy.png", "margin.png", "rewards.png", "learning_rate.png"}
    assert plots["accuracy.png"] == accuracy
    assert "train/rewards/margin" in plots["margin.png"]
    assert {"train/rewards/chosen", "train/rewards/rejected"} <= set(plots["rewards.png"])
    # exp(a preference loss) is no perplexity, though the rows carry one.
    assert not any("perplexity" in k for keys in plots.values() for k in keys)


def test_rl_job_plots_reward_with_its_eval_curve(tmp_path):
    plots = _plots(tmp_path, GRPO)
    assert plots == {"reward.png": ("train/reward", "eval/reward"), "kl.png": ("train/approx_kl",),
                     "completion_length.png": ("train/completion_length", "eval/completion_length"),
                     "clip_fraction.png": ("train/clip_frac/region",), "learning_rate.png": ("train/lr",)}


def test_rl_plots_before_the_first_step_and_the_placeholder(tmp_path):
    # Only the eval at start so far: already the RL set, and the train-only plots are placeholders.
    plots = _plots(tmp_path, GRPO[:1])
    assert plots["reward.png"] == ("eval/reward",) and plots["kl.png"] == () and plots["learning_rate.png"] == ()


def test_job_argument_overrides_detection_and_unknown_jobs_are_named(tmp_path):
    assert set(_plots(tmp_path, [], job="grpo")) == {"reward.png", "kl.png", "completion_length.png",
                                                     "clip_fraction.png", "learning_rate.png"}
    (tmp_path / "lm").mkdir()
    assert _plots(tmp_path / "lm", GRPO, job="sft") == {"loss.png": ("train/loss",), "eval.png": (),
                                                         "learning_rate.png": ("train/lr",)}
    with pytest.raises(ValueError, match=r"job='eval' has no plots; known: .*'dpo'"):
        write_plots(str(tmp_path / "metrics.jsonl"), str(tmp_path / "plots"), job="eval")
