"""Policy-gradient losses against plain numpy implementations written here, on random inputs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codejax.losses import (LOSS_AGGS, AdaptiveKLController, FixedKLController, aggregate, clipped_policy_loss,
                            clipped_value_loss, gae, kl_estimate, rloo_advantages, whiten)

RNG = np.random.default_rng(0)
SHAPES = [(1, 1), (3, 7), (8, 16)]


def _prefix_mask(batch, t, rng=RNG, allow_empty=False):
    """1 on a prefix of each row, of varying length (an empty row when allow_empty)."""
    lengths = rng.integers(0 if allow_empty else 1, t + 1, batch)
    lengths[0] = t  # one full row
    return (np.arange(t)[None, :] < lengths[:, None]).astype(np.float32)


def _f32(*arrays):
    return tuple(jnp.asarray(a, jnp.float32) for a in arrays)


# ------------------------------------------------------------------ numpy references

def _np_aggregate(x, mask, agg, max_tokens=None, num_items=None):
    batch = x.shape[0]
    seq_sums = [sum(x[b, t] for t in range(x.shape[1]) if mask[b, t]) for b in range(batch)]
    counts = [mask[b].sum() for b in range(batch)]
    if agg == "grpo":
        return np.mean([s / max(c, 1) for s, c in zip(seq_sums, counts)])
    if agg == "dr_grpo":
        return sum(seq_sums) / (batch * max_tokens)
    if agg == "dapo" and num_items is not None:
        return sum(seq_sums) / num_items
    return sum(seq_sums) / max(sum(counts), 1)


def _np_policy(logp, old, adv, mask, eps_low, eps_high, agg, max_tokens=None, num_items=None):
    if adv.ndim == 1:
        adv = np.repeat(adv[:, None], logp.shape[1], 1)
    per_token = np.zeros_like(logp)
    low = high = n = ratio_sum = kl_sum = 0.0
    for b in range(logp.shape[0]):
        for t in range(logp.shape[1]):
            if not mask[b, t]:
                continue
            ratio = np.exp(logp[b, t] - old[b, t])
            a = adv[b, t]
            per_token[b, t] = -min(ratio * a, min(max(ratio, 1 - eps_low), 1 + eps_high) * a)
            low += ratio < 1 - eps_low and a < 0
            high += ratio > 1 + eps_high and a > 0
            n += 1
            ratio_sum += ratio
            r = old[b, t] - logp[b, t]
            kl_sum += np.exp(r) - 1 - r
    metrics = {"clip_frac/low": low / n, "clip_frac/high": high / n, "clip_frac/region": (low + high) / n,
               "ratio/mean": ratio_sum / n, "approx_kl": kl_sum / n}
    return _np_aggregate(per_token, mask, agg, max_tokens, num_items), metrics


def _np_gae(rewards, values, mask, gamma, lam):
    batch, t_max = rewards.shape
    adv = np.zeros_like(rewards)
    for b in range(batch):
        n = int(mask[b].sum())
        last = 0.0
        for t in reversed(range(n)):
            next_value = values[b, t + 1] if t + 1 < n else 0.0
            delta = rewards[b, t] + gamma * next_value - values[b, t]
            last = delta + gamma * lam * last
            adv[b, t] = last
    returns = (adv + values) * mask
    return adv, returns


# ------------------------------------------------------------------ kl

@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_kl_estimators_match_numpy(estimator):
    logp, ref = -RNG.uniform(0, 5, (4, 9)), -RNG.uniform(0, 5, (4, 9))
    r = ref - logp
    want = {"k1": logp - ref, "k2": r ** 2 / 2, "k3": np.exp(r) - 1 - r}[estimator]
    got = kl_estimate(*_f32(logp, ref), estimator=estimator)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


def test_k3_is_nonnegative_and_zero_at_the_reference():
    logp = jnp.asarray(-RNG.uniform(0, 8, (5, 11)), jnp.float32)
    ref = jnp.asarray(-RNG.uniform(0, 8, (5, 11)), jnp.float32)
    assert float(jnp.min(kl_estimate(logp, ref))) >= 0.0
    np.testing.assert_array_equal(np.asarray(kl_estimate(logp, logp)), 0.0)


def test_unknown_kl_estimator_names_the_options():
    with pytest.raises(ValueError, match="k1.*k2.*k3"):
        kl_estimate(jnp.zeros(2), jnp.zeros(2), "k4")


# ------------------------------------------------------------------ aggregation and policy loss

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("agg", LOSS_AGGS)
def test_aggregate_matches_numpy(shape, agg):
    x = RNG.normal(0, 1, shape)
    mask = _prefix_mask(*shape, allow_empty=True)
    got = aggregate(*_f32(x, mask), agg, max_tokens=shape[1] + 3)
    np.testing.assert_allclose(float(got), _np_aggregate(x, mask, agg, shape[1] + 3), rtol=1e-5, atol=1e-6)
    if agg == "dapo":
        got = aggregate(*_f32(x, mask), agg, num_items=123.0)
        np.testing.assert_allclose(float(got), _np_aggregate(x, mask, agg, num_items=123.0), rtol=1e-5, atol=1e-6)


def test_aggregate_errors_name_the_problem():
    x = jnp.ones((2, 3))
    with pytest.raises(ValueError, match="grpo.*bnpo.*dapo.*dr_grpo"):
        aggregate(x, x, "token_mean")
    with pytest.raises(ValueError, match="max_tokens"):
        aggregate(x, x, "dr_grpo")
    with pytest.raises(ValueError, match="num_items"):
        aggregate(x, x, "bnpo", num_items=10)


def test_padding_garbage_does_not_leak_into_loss_or_gradient():
    mask = jnp.asarray([[1, 1, 0], [1, 0, 0]], jnp.float32)
    logp = jnp.asarray([[-1.0, -2.0, jnp.inf], [-0.5, jnp.nan, 1e30]])
    old = jnp.asarray([[-1.1, -1.9, -jnp.inf], [-0.4, 0.0, -1e30]])
    for agg in LOSS_AGGS:
        fn = lambda lp: clipped_policy_loss(lp, old, jnp.asarray([1.0, -1.0]), mask, loss_agg=agg, max_tokens=3)
        (loss, metrics), grad = jax.value_and_grad(fn, has_aux=True)(logp)
        assert np.isfinite(float(loss)) and all(np.isfinite(float(v)) for v in metrics.values()), agg
        assert np.all(np.isfinite(np.asarray(grad))) and float(jnp.sum(jnp.abs(grad) * (1 - mask))) == 0.0


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("agg", LOSS_AGGS)
@pytest.mark.parametrize("token_advantages", [False, True], ids=["seq-adv", "token-adv"])
def test_clipped_policy_loss_matches_numpy(shape, agg, token_advantages):
    batch, t = shape
    old = -RNG.uniform(0.1, 4, shape)
    # Log-ratios up to +-0.6 so ratios land below 1 - 0.1 and above 1 + 0.3, on both advantage signs.
    logp = old + RNG.uniform(-0.6, 0.6, shape)
    adv = RNG.normal(0, 1, shape if token_advantages else batch)
    mask = _prefix_mask(batch, t)
    num_items = 2.5 * mask.sum() if agg == "dapo" else None
    loss, metrics = clipped_policy_loss(*_f32(logp, old, adv, mask), clip_eps=0.1, clip_eps_high=0.3,
                                        loss_agg=agg, max_tokens=t + 2, num_items=num_items)
    want, want_metrics = _np_policy(logp, old, adv, mask, 0.1, 0.3, agg, t + 2, num_items)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5, atol=1e-6)
    for k, v in want_metrics.items():
        np.testing.assert_allclose(float(metrics[k]), v, rtol=1e-5, atol=1e-6, err_msg=k)


def test_asymmetric_clip_clips_on_both_sides():
    shape = (16, 32)
    old = -RNG.uniform(0.1, 4, shape)
    logp = old + RNG.uniform(-0.6, 0.6, shape)
    adv = RNG.normal(0, 1, shape)
    mask = np.ones(shape, np.float32)
    _, metrics = clipped_policy_loss(*_f32(logp, old, adv, mask), clip_eps=0.1, clip_eps_high=0.3)
    assert 0 < float(metrics["clip_frac/low"]) < 1 and 0 < float(metrics["clip_frac/high"]) < 1
    # The high side is wider: fewer tokens clip there than with a symmetric eps=0.1.
    _, sym = clipped_policy_loss(*_f32(logp, old, adv, mask), clip_eps=0.1)
    assert float(metrics["clip_frac/high"]) < float(sym["clip_frac/high"])
    assert float(metrics["clip_frac/low"]) == float(sym["clip_frac/low"])


@pytest.mark.parametrize("agg", LOSS_AGGS)
def test_gradient_is_zero_exactly_on_tokens_clipped_in_the_advantage_direction(agg):
    shape = (6, 20)
    old = -RNG.uniform(0.1, 4, shape)
    logp = old + RNG.uniform(-0.6, 0.6, shape)
    adv = RNG.normal(0, 1, shape)
    mask = _prefix_mask(*shape)
    eps_low, eps_high = 0.1, 0.3
    grad = jax.grad(lambda lp: clipped_policy_loss(lp, *_f32(old, adv, mask), clip_eps=eps_low,
                                                   clip_eps_high=eps_high, loss_agg=agg, max_tokens=20)[0])(
        jnp.asarray(logp, jnp.float32))
    grad = np.asarray(grad)
    ratio = np.exp(logp - old)
    clipped = ((ratio > 1 + eps_high) & (adv > 0)) | ((ratio < 1 - eps_low) & (adv < 0))
    live = (mask > 0) & ~clipped
    assert clipped[mask > 0].any() and live.any()
    np.testing.assert_array_equal(grad[clipped | (mask == 0)], 0.0)
    assert np.all(grad[live] != 0.0)
    # Unclipped tokens: d/dlogp of -ratio * A / normaliser (descent raises logp where A > 0).
    normaliser = {"grpo": shape[0] * mask.sum(1, keepdims=True), "bnpo": mask.sum(), "dapo": mask.sum(),
                  "dr_grpo": shape[0] * 20}[agg] * np.ones(shape)
    np.testing.assert_allclose(grad[live], (-adv * ratio / normaliser)[live], rtol=1e-4)


# ------------------------------------------------------------------ advantages

def _np_rloo(rewards, g):
    out = np.zeros_like(rewards)
    for start in range(0, len(rewards), g):
        group = rewards[start:start + g]
        for i in range(g):
            others = [group[j] for j in range(g) if j != i and not np.isnan(group[j])]
            if not np.isnan(group[i]) and others:
                out[start + i] = group[i] - np.mean(others)
    return out


@pytest.mark.parametrize("g", [2, 4, 8])
def test_rloo_matches_numpy(g):
    rewards = RNG.uniform(0, 1, 5 * g)
    rewards[1] = np.nan  # a failed reward in the first group
    rewards[g:g + g - 1] = np.nan  # a second group with a single reward: no baseline
    got = np.asarray(rloo_advantages(jnp.asarray(rewards, jnp.float32), g))
    np.testing.assert_allclose(got, _np_rloo(rewards, g), rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(got)) and got[1] == 0.0
    np.testing.assert_array_equal(got[g:2 * g], 0.0)


def test_rloo_equal_rewards_give_zero_and_groups_have_zero_mean():
    rewards = RNG.uniform(0, 1, (6, 4))
    rewards[3] = 0.25
    got = np.asarray(rloo_advantages(jnp.asarray(rewards.reshape(-1), jnp.float32), 4)).reshape(6, 4)
    np.testing.assert_array_equal(got[3], 0.0)
    np.testing.assert_allclose(got.mean(1), 0.0, atol=1e-6)
    # = G/(G-1) (r - mean)
    np.testing.assert_allclose(got, 4 / 3 * (rewards - rewards.mean(1, keepdims=True)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="group_size"):
        rloo_advantages(jnp.zeros(4), 1)
    with pytest.raises(ValueError, match="groups of 3"):
        rloo_advantages(jnp.zeros(4), 3)


@pytest.mark.parametrize("shift_mean", [True, False])
@pytest.mark.parametrize("unbiased", [False, True])
def test_whiten_matches_numpy(shift_mean, unbiased):
    x = RNG.normal(3, 2, (5, 13))
    mask = _prefix_mask(5, 13)
    x_bad = np.where(mask > 0, x, np.nan)  # padding content must not matter
    got = np.asarray(whiten(*_f32(x_bad, mask), shift_mean=shift_mean, unbiased=unbiased))
    vals = x[mask > 0]
    mean, var = vals.mean(), vals.var(ddof=1 if unbiased else 0)
    want = (x - mean) / np.sqrt(var + 1e-8) + (0 if shift_mean else mean)
    np.testing.assert_allclose(got[mask > 0], want[mask > 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got[mask == 0], 0.0)
    if shift_mean:
        assert abs(got[mask > 0].mean()) < 1e-5 and abs(got[mask > 0].std(ddof=1 if unbiased else 0) - 1) < 1e-4


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.99, 0.9), (0.9, 0.0)])
def test_gae_matches_numpy_loops(shape, gamma, lam):
    rewards, values = RNG.normal(0, 1, shape), RNG.normal(0, 1, shape)
    mask = _prefix_mask(*shape, allow_empty=True)
    adv, ret = gae(*_f32(rewards, values, mask), gamma, lam)
    want_adv, want_ret = _np_gae(rewards, values, mask, gamma, lam)
    np.testing.assert_allclose(np.asarray(adv), want_adv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ret), want_ret, rtol=1e-5, atol=1e-5)


def test_gae_with_gamma_lam_one_is_returns_to_go_minus_values():
    rewards, values = RNG.normal(0, 1, (4, 10)), RNG.normal(0, 1, (4, 10))
    mask = _prefix_mask(4, 10)
    adv, ret = gae(*_f32(np.where(mask > 0, rewards, 7.0), np.where(mask > 0, values, -3.0), mask), 1.0, 1.0)
    to_go = np.array([[sum(rewards[b, s] for s in range(t, 10) if mask[b, s]) for t in range(10)]
                      for b in range(4)]) * mask
    np.testing.assert_allclose(np.asarray(adv), (to_go - values) * mask, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ret), to_go, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ value loss

@pytest.mark.parametrize("agg", ["bnpo", "grpo"])
def test_clipped_value_loss_matches_numpy(agg):
    shape = (6, 12)
    old_v, ret = RNG.normal(0, 1, shape), RNG.normal(0, 1, shape)
    v = old_v + RNG.uniform(-0.5, 0.5, shape)
    mask = _prefix_mask(*shape)
    loss, metrics = clipped_value_loss(*_f32(v, old_v, ret, mask), clip=0.2, loss_agg=agg)
    per_token = np.zeros(shape)
    frac = n = 0
    for b in range(shape[0]):
        for t in range(shape[1]):
            if mask[b, t]:
                v_clip = old_v[b, t] + min(max(v[b, t] - old_v[b, t], -0.2), 0.2)
                a, c = (v[b, t] - ret[b, t]) ** 2, (v_clip - ret[b, t]) ** 2
                per_token[b, t] = 0.5 * max(a, c)
                frac += c > a
                n += 1
    np.testing.assert_allclose(float(loss), _np_aggregate(per_token, mask, agg), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["value/clip_frac"]), frac / n, rtol=1e-6)
    assert 0 < frac < n


# ------------------------------------------------------------------ KL controllers

def test_adaptive_kl_controller_moves_towards_target_within_the_clip():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    assert ctl.update(9.0, 256) == pytest.approx(0.1 * (1 + 0.2 * 256 / 10000))  # KL above target: coef up
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    assert ctl.update(5.7, 256) == pytest.approx(0.1 * (1 - 0.05 * 256 / 10000))  # below: down
    for kl, bound in ((1e6, 1.2), (0.0, 0.8)):  # far off: the step is capped at +-20% per horizon
        ctl = AdaptiveKLController(1.0, target=6.0, horizon=100)
        assert ctl.update(kl, 100) == pytest.approx(bound)
    state = ctl.state_dict()
    resumed = AdaptiveKLController(1.0, target=6.0, horizon=100)
    resumed.load_state_dict(state)
    assert resumed.value == ctl.value == pytest.approx(0.8)
    with pytest.raises(ValueError, match="target"):
        AdaptiveKLController(0.1, target=0.0, horizon=10)


def test_fixed_kl_controller_keeps_its_value():
    ctl = FixedKLController(0.05)
    assert ctl.update(100.0, 64) == 0.05 and ctl.value == 0.05
    ctl.load_state_dict({"value": 0.2})
    assert ctl.state_dict() == {"value": 0.2}
