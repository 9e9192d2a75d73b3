"""Jobs `grpo` (GRPO, RLOO) and `ppo` on the arithmetic-function task: rollout layout, learning, resume, LoRA.

An SFT warm start writes well-formed answers with the right operator a third of the time;
RL with the unit-test reward (run in the sandbox) must raise the held-out greedy reward.
"""
import json

import numpy as np
import pytest
import transformers

from codejax.config import load_config_file
from codejax.generate import SamplingParams, generate
from codejax.jobs import get_job
from codejax.models import load_hf
from codejax.losses import token_logprobs
from codejax.objectives.policy import completion_view
from codejax.rl.rollout import rollout_batch
from codejax.train.metrics import read_metrics

pytestmark = pytest.mark.slow  # end-to-end job runs


@pytest.fixture(scope="module")
def sft_model(arith_dir, tmp_path_factory):
    config = load_config_file("configs/sft.py:tiny")
    config.tokenizer.path = str(arith_dir / "tokenizer")
    config.data.train_paths = str(arith_dir / "sft_train.jsonl")
    config.data.format = "prompt_completion"
    config.data.seq_len, config.data.batch_size = 64, 32
    config.optim.lr = 3e-3
    config.train.steps, config.train.eval_every, config.train.progress_bar = 150, 0, False
    config.train.export_hf = True
    workdir = tmp_path_factory.mktemp("sft")
    get_job("sft")(config, str(workdir))
    return str(workdir / "hf_model")


def _rl_config(name, sft_model, **overrides):
    config = load_config_file(f"configs/{name}.py:tiny")
    config.model.hf_path, config.model.preset = sft_model, ""
    config.train.progress_bar = False
    config.train.eval_at_start = True
    config.train.log_every = 1
    config.optim.lr = 5e-4
    config.rl.kl_coef = 0.02
    for key, value in overrides.items():
        section, field = key.split("__")
        setattr(getattr(config, section), field, value)
    return config


def _rows(workdir, key):
    return [(r["step"], r[key]) for r in read_metrics(str(workdir / "metrics.jsonl")) if key in r]


def test_rollout_batch_reproduces_the_sampler_log_probs(sft_model):
    """The training layout (left-padded prompt, completion view) computes the sampler's numbers."""
    tok = transformers.AutoTokenizer.from_pretrained(sft_model)  # export_hf saved it with the model
    model, params = load_hf(sft_model)
    prompts = [[5] * 3 + list(tok("def f(x):")["input_ids"]), list(tok("def f(n):\n    return n")["input_ids"])]
    samples = generate(model, {"params": params}, tok, prompts, SamplingParams(max_new_tokens=6, temperature=1.0,
                                                                              n=2, seed=3))
    prompt_ids = [prompts[i] for i in samples.prompt_index]
    P = max(map(len, prompts))
    batch = rollout_batch(prompt_ids, samples.tokens, P, 6, tok.pad_token_id)
    targets = completion_view(batch["targets"], P)
    for i, toks in enumerate(samples.tokens):
        assert targets[i, :len(toks)].tolist() == toks
        assert batch["mask"][i].sum() == len(toks)
    logits = model.apply({"params": params}, batch["inputs"], batch["positions"], batch["segment_ids"])
    logp = np.asarray(completion_view(token_logprobs(logits, batch["targets"]), P))
    for i, lp in enumerate(samples.logprobs):
        np.testing.assert_allclose(logp[i, :len(lp)], lp, atol=2e-4)


def test_grpo_raises_the_execution_reward_with_bounded_kl(sft_model, tmp_path):
    config = _rl_config("grpo_code", sft_model, train__steps=30, train__eval_every=0, train__checkpoint_every=0,
                        rl__prompts_per_step=8, rl__group_size=8, rl__max_new_tokens=8, rl__minibatches=2)
    summary = get_job("grpo")(config, str(tmp_path))
    evals = _rows(tmp_path, "eval/reward")
    start, end = evals[0][1], evals[-1][1]
    assert end >= start + 0.25, evals
    kls = [v for _, v in _rows(tmp_path, "train/kl")]
    assert max(kls) < 1.0, kls  # k3 per token against the SFT reference (0.3-0.5 at the end in practice)
    zero = [v for _, v in _rows(tmp_path, "train/zero_spread_fraction")]
    assert all(0.0 <= z <= 1.0 for z in zero)
    assert summary["steps"] == 30 and (tmp_path / "plots").is_dir()


def test_ppo_raises_the_execution_reward_with_bounded_kl(sft_model, tmp_path):
    config = _rl_config("ppo", sft_model, train__steps=20, train__eval_every=0, train__checkpoint_every=0,
                        rl__prompts_per_step=64, rl__max_new_tokens=8, rl__epochs=2, rl__minibatches=2,
                        rl__vf_coef=0.5)
    get_job("ppo")(config, str(tmp_path))
    evals = _rows(tmp_path, "eval/reward")
    assert evals[-1][1] >= evals[0][1] + 0.3, evals
    kls = [v for _, v in _rows(tmp_path, "train/kl")]
    assert max(kls) < 5.0, kls  # summed k1 per completion (3 tokens)
    coefs = [v for _, v in _rows(tmp_path, "train/kl_coef")]
    assert all(0 < c <= 0.02 * 1.2 for c in coefs)  # the adaptive controller moves at most 20% per update


def test_rl_resume_continues_the_prompt_stream_exactly(sft_model, tmp_path):
    """Stopping after 2 steps and restarting to 4 gives the rewards of an uninterrupted 4-step run."""
    def run(workdir, steps):
        config = _rl_config("grpo_code", sft_model, train__steps=steps, train__eval_every=0,
                            train__checkpoint_every=2, train__eval_at_start=False)
        get_job("grpo")(config, str(workdir))
        return {k: _rows(workdir, k) for k in ("train/reward", "train/loss")}

    run(tmp_path / "a", 2)
    resumed = run(tmp_path / "a", 4)
    straight = run(tmp_path / "b", 4)
    assert [s for s, _ in resumed["train/reward"]] == [1, 2, 3, 4]
    for key in resumed:  # the loss also depends on the minibatch order of the update
        np.testing.assert_allclose([v for _, v in resumed[key]], [v for _, v in straight[key]], atol=1e-5)


@pytest.mark.parametrize("algorithm", ["rloo", "grpo"])
def test_lora_policy_uses_the_base_as_reference(sft_model, tmp_path, algorithm):
    config = _rl_config("grpo_code", sft_model, train__steps=2, train__eval_every=0, train__checkpoint_every=0,
                        rl__algorithm=algorithm, peft__method="lora", peft__target_modules="all-linear",
                        rl__loss_agg="dr_grpo" if algorithm == "grpo" else "bnpo")
    summary = get_job("grpo")(config, str(tmp_path))
    first = read_metrics(str(tmp_path / "metrics.jsonl"))[1]
    # B = 0 at the start: the adapted policy is the base, so the first rollouts have KL 0 to it.
    assert first["train/kl"] == pytest.approx(0.0, abs=1e-4)  # float noise of a different fusion only
    assert summary["peft"]["method"] == "lora" and (tmp_path / "adapter").is_dir()
    with open(tmp_path / "summary.json") as f:
        assert json.load(f)["algorithm"] == algorithm


def test_ppo_with_a_separate_value_model_and_every_option(sft_model, tmp_path):
    """Separate value model, whitened rewards, k3 penalty, masked truncations, fixed KL: it runs and stays finite."""
    config = _rl_config("ppo", sft_model, train__steps=2, train__eval_every=0, train__checkpoint_every=0,
                        rl__value_head="separate", rl__whiten_rewards=True, rl__kl_estimator="k3",
                        rl__mask_truncated=True, rl__adaptive_kl=False, rl__max_new_tokens=1,
                        rl__rewards="unit_tests,syntax_valid", rl__ensemble="min", rl__missing_eos_penalty=1.0)
    summary = get_job("ppo")(config, str(tmp_path))
    last = summary["last_train"]
    assert np.isfinite(last["train/loss"]) and last["train/kl_coef"] == pytest.approx(0.02)
    # One new token cannot finish " + 3" + EOS: every completion is truncated (the SFT model never starts
    # with EOS), fails both rewards (min = 0), pays the penalty and is masked out of the loss.
    assert last["train/truncated_fraction"] == 1.0
    assert last["train/reward"] == pytest.approx(-1.0)
    assert last["train/loss_tokens"] == 0.0  # dapo's weight: no unmasked token left
