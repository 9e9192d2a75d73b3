"""Jobs `reward` and `dpo` end to end on the arithmetic preference task: they learn, and DPO starts at log 2."""
import json
import math

import numpy as np
import pytest

from codejax.config import load_config_file
from codejax.jobs import get_job
from codejax.train.metrics import read_metrics

pytestmark = pytest.mark.slow  # end-to-end job runs


def _config(name, arith_dir, **overrides):
    config = load_config_file(f"configs/{name}.py:tiny")
    config.tokenizer.path = str(arith_dir / "tokenizer")
    config.data.train_paths = str(arith_dir / "pairs_train.jsonl")
    config.data.eval_paths = str(arith_dir / "pairs_eval.jsonl")
    config.data.eval_fraction = 0.0
    config.data.seq_len = 32
    config.train.progress_bar = False
    for key, value in overrides.items():
        section, field = key.split("__")
        setattr(getattr(config, section), field, value)
    return config


def _evals(workdir):
    return [r for r in read_metrics(str(workdir / "metrics.jsonl")) if "eval/loss" in r]


def test_reward_model_reaches_90_percent_held_out_accuracy(arith_dir, tmp_path):
    config = _config("reward", arith_dir, train__steps=80, train__eval_every=40, train__eval_at_start=True,
                     train__export_hf=True)
    summary = get_job("reward")(config, str(tmp_path))
    evals = _evals(tmp_path)
    assert evals[0]["eval/accuracy"] < 0.8  # a random head starts near chance
    assert summary["last_eval"]["eval/accuracy"] >= 0.9, evals
    assert summary["last_eval"]["eval/rewards/margin"] > 0

    # The trained model as an RL reward (rl.reward_model): it ranks the held-out pairs from its checkpoint.
    from codejax.rl.environments import arith_pairs
    from codejax.rl.reward_model import reward_model_fn
    import transformers
    tokenizer = transformers.AutoTokenizer.from_pretrained(config.tokenizer.path)
    score = reward_model_fn(config, tokenizer, str(tmp_path))
    pairs = arith_pairs(64, seed=2)
    prompts = [p["prompt"] for p in pairs]
    chosen = score(prompts, [p["chosen"] for p in pairs])
    rejected = score(prompts, [p["rejected"] for p in pairs])
    assert np.mean(np.asarray(chosen) > np.asarray(rejected)) >= 0.9

    # The HF export: transformers' *ForSequenceClassification scores a sequence as the checkpoint does.
    import torch
    assert summary["hf_model"] == str(tmp_path / "hf_model")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(summary["hf_model"], dtype=torch.float32)
    assert type(hf).__name__.endswith("ForSequenceClassification") and hf.config.num_labels == 1
    for p in pairs[:3]:
        for completion in (p["chosen"], p["rejected"]):
            ids = tokenizer(p["prompt"] + completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            with torch.no_grad():
                got = float(hf.eval()(input_ids=torch.tensor([ids])).logits[0, 0])
            want = score([p["prompt"]], [completion])[0]
            assert abs(got - want) <= 1e-4 * max(1.0, abs(want)), (got, want)

    # The trained model as the synth job's reward filter (synth.reward_model): each item is scored as an
    # Alpaca answer, and the items below synth.reward_min are dropped with their score kept.
    from codejax.config import base_config
    from codejax.synth import Item
    from codejax.synth.quality import STAGES, QCEnv
    synth_config = base_config()
    sc = synth_config.synth
    sc.reward_model, sc.reward_min = str(tmp_path), -math.inf
    items = [Item("m", p["prompt"], "def f(x):\n    return x" + c) for p in pairs[:8] for c in (p["chosen"], p["rejected"])]
    first = STAGES["score"](items, QCEnv(None, sc, synth_config))
    rewards = [it.origin["reward"] for it in items]
    assert first == [""] * len(items) and all(math.isfinite(r) for r in rewards) and len(set(rewards)) > 1
    sc.reward_min = float(np.median(rewards))
    reasons = STAGES["score"](items, QCEnv(None, sc, synth_config))
    assert reasons == ["reward_low" if r < sc.reward_min else "" for r in rewards] and "" in reasons


def test_dpo_starts_at_log2_and_raises_held_out_accuracy_and_margin(arith_dir, tmp_path):
    config = _config("dpo", arith_dir, train__eval_at_start=True)
    summary = get_job("dpo")(config, str(tmp_path))
    evals = _evals(tmp_path)
    start, end = evals[0], summary["last_eval"]
    np.testing.assert_allclose(start["eval/loss"], math.log(2), rtol=1e-5)  # policy == reference
    assert start["eval/rewards/margin"] == 0.0
    assert end["eval/rewards/accuracy"] >= 0.9, evals
    margins = [e["eval/rewards/margin"] for e in evals]
    assert margins == sorted(margins) and margins[-1] > 0.1, margins  # beta=0.1: a log-ratio margin > 1
    assert end["eval/loss"] < 0.9 * math.log(2)


def test_dpo_precomputed_reference_gives_the_same_losses(arith_dir, tmp_path):
    """Reference log-probs computed once up front equal the frozen copy's, step for step."""
    runs = {}
    for precompute in (False, True):
        workdir = tmp_path / str(precompute)
        config = _config("dpo", arith_dir, train__steps=6, train__log_every=1, train__eval_every=0,
                         preference__precompute_ref=precompute)
        get_job("dpo")(config, str(workdir))
        runs[precompute] = [r["train/loss"] for r in read_metrics(str(workdir / "metrics.jsonl")) if "train/loss" in r]
    np.testing.assert_allclose(runs[True], runs[False], rtol=2e-4)


@pytest.mark.parametrize("loss_type", ["ipo", "hinge", "robust", "simpo", "orpo"])
def test_dpo_variants_learn_the_preference(arith_dir, tmp_path, loss_type):
    # ORPO's odds-ratio term rides on an NLL that dominates a random model's loss at first: more steps.
    steps = 60 if loss_type == "orpo" else 30
    config = _config("dpo", arith_dir, preference__loss_type=loss_type, train__steps=steps,
                     preference__label_smoothing=0.1 if loss_type == "robust" else 0.0)
    summary = get_job("dpo")(config, str(tmp_path))
    assert summary["last_eval"]["eval/rewards/accuracy"] >= 0.75, summary["last_eval"]
    with open(tmp_path / "summary.json") as f:
        assert json.load(f)["steps"] == steps


def test_dpo_with_lora_uses_the_base_as_reference(arith_dir, tmp_path):
    config = _config("dpo", arith_dir, peft__method="lora", peft__target_modules="all-linear", peft__rank=8,
                     train__eval_at_start=True, optim__lr=5e-3)
    summary = get_job("dpo")(config, str(tmp_path))
    evals = _evals(tmp_path)
    np.testing.assert_allclose(evals[0]["eval/loss"], math.log(2), rtol=1e-5)  # B = 0: adapted == base
    assert summary["last_eval"]["eval/rewards/accuracy"] >= 0.75, evals
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
