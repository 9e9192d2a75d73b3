"""RL loss functions in the training core's (sum, weight) form, and the reward combination."""
import jax
import ml_collections
import numpy as np
import pytest

from codejax.losses import aggregate, clipped_policy_loss
from codejax.losses import token_logprobs
from codejax.models import Transformer, init_params, tiny_config
from codejax.objectives import policy as objectives
from codejax.objectives.policy import completion_view
from codejax.rl.rewards import register_reward, REWARDS
from codejax.rl.rollout import RewardSpec
from codejax.train.step import accumulated_grads

P, T, N = 5, 6, 8


def _rc(**kw):
    base = dict(loss_agg="grpo", clip_eps=0.2, clip_eps_high=0.3, kl_coef=0.0, kl_estimator="k3", value_clip=0.2,
                vf_coef=0.1, rewards="", reward_weights="", ensemble="sum", missing_eos_penalty=0.0,
                sandbox_workers=0, sandbox_timeout_s=5.0)
    return ml_collections.ConfigDict({**base, **kw})


def _batch(rng, model, params):
    tokens = rng.integers(7, 500, (N, P + T)).astype(np.int32)
    lengths = rng.integers(1, T + 1, N)
    mask = (np.arange(T)[None] < lengths[:, None]).astype(np.float32)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "segment_ids": np.ones((N, P + T - 1), np.int32),
             "positions": np.tile(np.arange(P + T - 1, dtype=np.int32), (N, 1)), "mask": mask,
             "advantages": rng.normal(size=N).astype(np.float32)}
    logits = model.apply({"params": params}, batch["inputs"], batch["positions"], batch["segment_ids"])
    logp = np.asarray(completion_view(token_logprobs(logits, batch["targets"]), P))
    batch["old_logp"] = (logp + rng.normal(0, 0.3, logp.shape)).astype(np.float32)  # ratios clip on both sides
    batch["ref_logp"] = (logp + rng.normal(0, 0.3, logp.shape)).astype(np.float32)
    return batch, logp


@pytest.fixture(scope="module")
def setup():
    cfg = tiny_config("llama")
    model = Transformer(cfg)
    return model, init_params(cfg, jax.random.PRNGKey(0))


@pytest.mark.parametrize("agg", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_grpo_loss_fn_is_the_aggregated_clipped_loss_plus_kl(setup, agg):
    model, params = setup
    batch, logp = _batch(np.random.default_rng(0), model, params)
    rc = _rc(loss_agg=agg, kl_coef=0.05)
    loss_sum, weight, _ = objectives.grpo_loss_fn(model, rc, P, T)({"params": params}, batch, None)
    call_agg = "bnpo" if agg == "dapo" else agg
    pg, _ = clipped_policy_loss(logp, batch["old_logp"], batch["advantages"], batch["mask"], 0.2, 0.3,
                                loss_agg=call_agg, max_tokens=T)
    r = batch["ref_logp"] - logp
    kl = aggregate(np.exp(r) - 1 - r, batch["mask"], call_agg, max_tokens=T)
    np.testing.assert_allclose(float(loss_sum / weight), float(pg + 0.05 * kl), rtol=1e-5)


def test_dapo_normalises_by_every_token_of_the_step_under_accumulation(setup):
    """dapo: the accumulated gradient equals the one-shot gradient (a global token mean); grpo too, per sequence."""
    model, params = setup
    batch, _ = _batch(np.random.default_rng(1), model, params)
    for agg in ("dapo", "grpo"):
        loss_fn = objectives.grpo_loss_fn(model, _rc(loss_agg=agg), P, T)
        one = accumulated_grads(loss_fn, {"params": params}, batch, jax.random.PRNGKey(0), 1)
        four = accumulated_grads(loss_fn, {"params": params}, batch, jax.random.PRNGKey(0), 4)
        np.testing.assert_allclose(float(one[0]), float(four[0]), rtol=1e-5)
        for a, b in zip(jax.tree.leaves(one[2]), jax.tree.leaves(four[2])):
            np.testing.assert_allclose(a, b, atol=1e-7, rtol=1e-4)


def test_reward_spec_weights_ensembles_and_penalises_missing_eos():
    name = "test_objectives_length"
    if name not in REWARDS:
        register_reward(name)(lambda prompts, completions, **_: [len(c) / 10 for c in completions])
    rc = _rc(rewards=f"{name},syntax_valid", reward_weights="2,1", missing_eos_penalty=0.5)
    spec = RewardSpec.from_config(rc)
    total, parts = spec(["", ""], ["x = 1", "x = ("], {}, ["eos", "length"])
    np.testing.assert_allclose(parts[name], [0.5, 0.5])
    np.testing.assert_allclose(parts["syntax_valid"], [1.0, 0.0])
    np.testing.assert_allclose(total, [2 * 0.5 + 1.0, 2 * 0.5 + 0.0 - 0.5])
    spec.ensemble = "min"
    total, _ = spec(["", ""], ["x = 1", "x = ("], {}, ["eos", "eos"])
    np.testing.assert_allclose(total, [1.0, 0.0])
    with pytest.raises(ValueError, match="reward_weights"):
        RewardSpec.from_config(_rc(rewards="syntax_valid", reward_weights="1,2"))
