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
    if agg == "dapo":
        batch = objectives.add_token_share(batch)
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
    batch = objectives.add_token_share(batch)
    for agg in ("dapo", "grpo"):
        loss_fn = objectives.grpo_loss_fn(model, _rc(loss_agg=agg), P, T)
        one = accumulated_grads(loss_fn, {"params": params}, batch, jax.random.PRNGKey(0), 1)
        four = accumulated_grads(loss_fn, {"params": params}, batch, jax.random.PRNGKey(0), 4)
        np.testing.assert_allclose(float(one[0]), float(four[0]), rtol=1e-5)
        for a, b in zip(jax.tree.leaves(one[2]), jax.tree.leaves(four[2])):
            np.testing.assert_allclose(a, b, atol=1e-7, rtol=1e-4)


def test_dapo_minibatches_divide_by_the_generation_tokens_over_steps(setup):
    """TRL's dapo: each of M optimizer steps over one rollout batch divides its token-loss sum by
    (the batch's mask tokens) / M, not by its own tokens, so every generated token weighs the same."""
    model, params = setup
    batch, logp = _batch(np.random.default_rng(2), model, params)
    batch = objectives.add_token_share(batch)
    total_tokens = batch["mask"].sum()
    loss_fn = objectives.grpo_loss_fn(model, _rc(loss_agg="dapo"), P, T)
    halves = [np.arange(N // 2), np.arange(N // 2, N)]
    assert batch["mask"][halves[0]].sum() != batch["mask"][halves[1]].sum()  # else the old rule agrees
    for idx in halves:
        mb = {k: v[idx] for k, v in batch.items()}
        loss_sum, weight, _ = loss_fn({"params": params}, mb, None)
        pg, _ = clipped_policy_loss(logp[idx], mb["old_logp"], mb["advantages"], mb["mask"], 0.2, 0.3, loss_agg="bnpo")
        token_sum = float(pg) * mb["mask"].sum()
        np.testing.assert_allclose(float(loss_sum / weight), token_sum / (total_tokens / 2), rtol=1e-5)
    with pytest.raises(ValueError, match="add_token_share"):
        loss_fn({"params": params}, {k: v for k, v in batch.items() if k != objectives.TOKEN_SHARE}, None)


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


def test_ppo_leaves_completions_with_a_nan_reward_out_of_the_loss():
    """As GRPO and RLOO do: a NaN reward is not a 0 reward; its row leaves the mask."""
    from codejax.rl.algorithms import generalised_advantages
    rng = np.random.default_rng(3)
    mask = (np.arange(T)[None] < rng.integers(1, T + 1, N)[:, None]).astype(np.float32)
    batch = {"mask": mask, "old_values": rng.normal(size=(N, T)).astype(np.float32),
             "old_logp": np.zeros((N, T), np.float32)}
    rewards = rng.uniform(size=N)
    rewards[[1, 5]] = np.nan
    out, metrics = generalised_advantages(batch, rewards, _rc(gamma=1.0, lam=0.95, whiten_rewards=False), 0.0)
    np.testing.assert_array_equal(out["mask"][[1, 5]], 0.0)
    np.testing.assert_array_equal(out["mask"][[0, 2, 3, 4, 6, 7]], mask[[0, 2, 3, 4, 6, 7]])
    assert metrics["train/reward_missing_fraction"] == pytest.approx(2 / N)
    # The other rows' advantages are those of a batch without the NaN rows at all.
    keep = [0, 2, 3, 4, 6, 7]
    alone, _ = generalised_advantages({k: v[keep] for k, v in batch.items()}, rewards[keep],
                                      _rc(gamma=1.0, lam=0.95, whiten_rewards=False), 0.0)
    np.testing.assert_allclose(out["advantages"][keep] * mask[keep], alone["advantages"] * mask[keep], rtol=1e-5, atol=1e-6)


def test_truncated_importance_weights_scale_each_tokens_surrogate_and_are_capped():
    rng = np.random.default_rng(4)
    mask = (np.arange(T)[None] < rng.integers(1, T + 1, N)[:, None]).astype(np.float32)
    old_logp = rng.normal(-2, 0.5, (N, T)).astype(np.float32)
    sampler_logp = (old_logp + rng.normal(0, 0.5, (N, T))).astype(np.float32)  # a bf16-like, drifted sampler
    batch = {"mask": mask, "old_logp": old_logp}
    out, metrics = objectives.add_sampler_logprobs(batch, sampler_logp, tis_cap=2.0)
    want = np.where(mask > 0, np.minimum(np.exp(old_logp - sampler_logp), 2.0), 0.0)
    np.testing.assert_allclose(out[objectives.TIS_WEIGHT], want, rtol=1e-6)
    diff = np.abs(sampler_logp - old_logp)[mask > 0]
    assert metrics["train/logprob_diff/max"] == pytest.approx(diff.max())
    assert metrics["train/logprob_diff/mean"] == pytest.approx(diff.mean())
    assert metrics["train/tis_weight/capped_fraction"] == pytest.approx(np.mean(want[mask > 0] >= 2.0))
    assert 0 < metrics["train/tis_weight/capped_fraction"] < 1
    off, off_metrics = objectives.add_sampler_logprobs(batch, sampler_logp, tis_cap=0.0)
    assert objectives.TIS_WEIGHT not in off and "train/tis_weight/mean" not in off_metrics
    # The weighted surrogate against numpy (bnpo: a token mean over the mask).
    logp = (old_logp + rng.normal(0, 0.2, (N, T))).astype(np.float32)
    adv = rng.normal(size=N).astype(np.float32)
    loss, _ = clipped_policy_loss(logp, old_logp, adv, mask, 0.2, None, loss_agg="bnpo", token_weights=want)
    ratio = np.exp(logp - old_logp)
    per_token = -np.minimum(ratio * adv[:, None], np.clip(ratio, 0.8, 1.2) * adv[:, None]) * want
    np.testing.assert_allclose(float(loss), (per_token * mask).sum() / mask.sum(), rtol=1e-5)
