"""Preference and RL losses against plain numpy implementations written here, on random inputs."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from codejax.losses import (DPO_LOSSES, bradley_terry_loss, dpo_loss, dpo_metrics, group_advantages,
                            sequence_logprobs, zero_spread_fraction)

RNG = np.random.default_rng(0)


def _log_sigmoid(x):
    return -np.log1p(np.exp(-x))


def _numpy_dpo(pi_c, pi_r, ref_c, ref_r, beta, loss_type, eps, len_c, len_r, gamma):
    h = (pi_c - ref_c) - (pi_r - ref_r)
    if loss_type == "sigmoid":
        return -(1 - eps) * _log_sigmoid(beta * h) - eps * _log_sigmoid(-beta * h)
    if loss_type == "robust":
        return (-(1 - eps) * _log_sigmoid(beta * h) + eps * _log_sigmoid(-beta * h)) / (1 - 2 * eps)
    if loss_type == "ipo":
        return (h - 1 / (2 * beta)) ** 2
    if loss_type == "hinge":
        return np.maximum(0.0, 1 - beta * h)
    p_c, p_r = np.exp(pi_c / len_c), np.exp(pi_r / len_r)
    if loss_type == "simpo":
        z = beta * (pi_c / len_c - pi_r / len_r) - gamma
        return -(1 - eps) * _log_sigmoid(z) - eps * _log_sigmoid(-z)
    return -_log_sigmoid(np.log(p_c / (1 - p_c)) - np.log(p_r / (1 - p_r)))  # orpo


@pytest.mark.parametrize("loss_type", DPO_LOSSES)
def test_dpo_losses_match_numpy(loss_type):
    n = 64
    len_c, len_r = RNG.integers(1, 40, n).astype(np.float64), RNG.integers(1, 40, n).astype(np.float64)
    # Summed log-probs of plausible size: about -1 nat per token.
    pi_c, pi_r = -len_c * RNG.uniform(0.2, 2, n), -len_r * RNG.uniform(0.2, 2, n)
    ref_c, ref_r = pi_c + RNG.normal(0, 2, n), pi_r + RNG.normal(0, 2, n)
    args = dict(beta=0.3, eps=0.1 if loss_type in ("sigmoid", "robust", "simpo") else 0.0, gamma=0.7)
    got = dpo_loss(*(jnp.asarray(a, jnp.float32) for a in (pi_c, pi_r, ref_c, ref_r)), beta=args["beta"],
                   loss_type=loss_type, label_smoothing=args["eps"], len_c=jnp.asarray(len_c, jnp.float32),
                   len_r=jnp.asarray(len_r, jnp.float32), simpo_gamma=args["gamma"])
    want = _numpy_dpo(pi_c, pi_r, ref_c, ref_r, args["beta"], loss_type, args["eps"], len_c, len_r, args["gamma"])
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-5)


def test_dpo_with_policy_equal_to_reference_is_log_2():
    pi = jnp.asarray(RNG.normal(-20, 5, (2, 16)), jnp.float32)
    losses = dpo_loss(pi[0], pi[1], pi[0], pi[1], beta=0.1)
    np.testing.assert_allclose(np.asarray(losses), math.log(2), rtol=1e-6)
    metrics = dpo_metrics(pi[0], pi[1], pi[0], pi[1], beta=0.1)
    assert float(metrics["rewards/margin"]) == 0.0 and float(metrics["rewards/accuracy"]) == 0.0


def test_dpo_errors_name_the_problem():
    x = jnp.zeros(3)
    with pytest.raises(ValueError, match="loss_type"):
        dpo_loss(x, x, x, x, loss_type="kto")
    with pytest.raises(ValueError, match="len_c"):
        dpo_loss(x, x, loss_type="simpo")


def test_sequence_logprobs_sum_completion_tokens_only():
    logits = RNG.normal(0, 1, (3, 5, 11)).astype(np.float32)
    targets = RNG.integers(0, 11, (3, 5))
    weights = (RNG.uniform(size=(3, 5)) > 0.4).astype(np.float32)
    total, count = sequence_logprobs(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights))
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = np.array([sum(log_softmax[b, t, targets[b, t]] for t in range(5) if weights[b, t]) for b in range(3)])
    np.testing.assert_allclose(np.asarray(total), want, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(count), weights.sum(1))


def test_bradley_terry_matches_numpy():
    r_c, r_r = RNG.normal(0, 2, 32), RNG.normal(0, 2, 32)
    got = bradley_terry_loss(jnp.asarray(r_c), jnp.asarray(r_r), margin=0.5, centering=0.01)
    want = -_log_sigmoid(r_c - r_r - 0.5) + 0.01 * (r_c + r_r) ** 2
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)


def _numpy_group_advantages(rewards, scale):
    """TRL's GRPO advantages in numpy: group mean, torch.std's ddof=1, eps 1e-4; NaN rows and groups
    with fewer than two finite rewards get 0."""
    out = np.zeros_like(rewards)
    finite = rewards[~np.isnan(rewards)]
    batch_std = np.std(finite, ddof=1) if finite.size >= 2 else 0.0
    for g, row in enumerate(rewards):
        ok = ~np.isnan(row)
        if ok.sum() < 2:
            continue
        centred = row[ok] - row[ok].mean()
        std = {"group": np.std(row[ok], ddof=1), "batch": batch_std, "none": None}[scale]
        out[g, ok] = centred if std is None else centred / (std + 1e-4)
    return out


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages_match_trl_in_numpy(scale):
    rewards = RNG.uniform(0, 1, (6, 4))
    rewards[2] = 0.7  # a group with equal rewards
    rewards[4, 1] = np.nan  # a failed reward call
    rewards[5, :3] = np.nan  # one finite reward: no baseline
    got = np.asarray(group_advantages(jnp.asarray(rewards.reshape(-1), jnp.float32), 4, scale=scale)).reshape(6, 4)
    np.testing.assert_allclose(got, _numpy_group_advantages(rewards, scale), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[2], 0.0)
    assert got[4, 1] == 0.0 and np.all(got[5] == 0.0)
    assert float(zero_spread_fraction(jnp.asarray(rewards.reshape(-1)), 4)) == pytest.approx(2 / 6)


def test_group_std_is_the_sample_std():
    """ddof=1: at G=4, ddof=0 would make every advantage sqrt(4/3) = 1.155x larger."""
    rewards = jnp.asarray([0.0, 0.0, 1.0, 1.0])
    got = np.asarray(group_advantages(rewards, 4))
    np.testing.assert_allclose(got, np.array([-0.5, -0.5, 0.5, 0.5]) / (np.std([0, 0, 1, 1], ddof=1) + 1e-4), rtol=1e-6)
    with pytest.raises(ValueError, match="group, batch, none|'group', 'batch', 'none'"):
        group_advantages(rewards, 4, scale=True)


def test_orpo_log_odds_keep_their_precision_and_gradient_near_p_one():
    """log(1 - p) at p = exp(avg) -> 1: the two-branch log1mexp against float64 numpy."""
    from jax import grad
    from codejax.losses.preference import log1mexp
    xs = np.array([-1e-7, -1e-6, -1e-3, -0.5, -0.7, -1.0, -20.0, -80.0])
    np.testing.assert_allclose(np.asarray(log1mexp(jnp.asarray(xs, jnp.float32))), np.log(-np.expm1(xs)), rtol=1e-6, atol=1e-30)
    g = np.array([float(grad(lambda x: log1mexp(x))(jnp.float32(x))) for x in xs])
    np.testing.assert_allclose(g, -np.exp(xs) / -np.expm1(xs), rtol=1e-5)
    for x in (0.0, -1e-45):  # p = 1: the loss saturates but nothing is NaN
        assert np.isfinite(float(grad(lambda v: log1mexp(v))(jnp.float32(x))))
    # The ORPO loss's gradient in the chosen avg log-prob, at avg = -1e-6, to 1e-5 relative.
    avg_c, avg_r = -1e-6, -2.0

    def orpo(a):
        return dpo_loss(a, jnp.float32(avg_r), loss_type="orpo", len_c=jnp.float32(1), len_r=jnp.float32(1))

    def numpy_grad(a, r):  # d/da of -log s(lo), lo = a - log(1 - e^a) - (r - log(1 - e^r))
        lo = a - np.log(-np.expm1(a)) - (r - np.log(-np.expm1(r)))
        return -(1 - 1 / (1 + np.exp(-lo))) * (1 + np.exp(a) / -np.expm1(a))
    np.testing.assert_allclose(float(grad(orpo)(jnp.float32(avg_c))), numpy_grad(avg_c, avg_r), rtol=1e-5)


def test_ipo_length_norm_uses_per_token_log_ratios():
    n = 16
    len_c, len_r = RNG.integers(1, 40, n).astype(np.float64), RNG.integers(1, 40, n).astype(np.float64)
    pi_c, pi_r = -len_c * RNG.uniform(0.2, 2, n), -len_r * RNG.uniform(0.2, 2, n)
    ref_c, ref_r = pi_c + RNG.normal(0, 2, n), pi_r + RNG.normal(0, 2, n)
    got = dpo_loss(*(jnp.asarray(a, jnp.float32) for a in (pi_c, pi_r, ref_c, ref_r)), beta=0.1, loss_type="ipo",
                   len_c=jnp.asarray(len_c, jnp.float32), len_r=jnp.asarray(len_r, jnp.float32), length_norm=True)
    h = (pi_c - ref_c) / len_c - (pi_r - ref_r) / len_r
    np.testing.assert_allclose(np.asarray(got), (h - 1 / (2 * 0.1)) ** 2, rtol=2e-5)
    with pytest.raises(ValueError, match="len_c"):
        dpo_loss(jnp.zeros(2), jnp.zeros(2), jnp.zeros(2), jnp.zeros(2), loss_type="ipo", length_norm=True)


@pytest.mark.parametrize("loss_type", ["ipo", "hinge", "orpo"])
def test_label_smoothing_on_a_loss_without_it_is_an_error(loss_type):
    from codejax.config import base_config
    from codejax.objectives.dpo import check_preference_config
    pc = base_config().preference
    pc.loss_type, pc.label_smoothing = loss_type, 0.1
    with pytest.raises(ValueError, match="preference.label_smoothing=0.1.*has no label smoothing"):
        check_preference_config(pc)
    pc.label_smoothing = 0.0
    check_preference_config(pc)


