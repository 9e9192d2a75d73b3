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
        return -_log_sigmoid(beta * (pi_c / len_c - pi_r / len_r) - gamma)
    return -_log_sigmoid(np.log(p_c / (1 - p_c)) - np.log(p_r / (1 - p_r)))  # orpo


@pytest.mark.parametrize("loss_type", DPO_LOSSES)
def test_dpo_losses_match_numpy(loss_type):
    n = 64
    len_c, len_r = RNG.integers(1, 40, n).astype(np.float64), RNG.integers(1, 40, n).astype(np.float64)
    # Summed log-probs of plausible size: about -1 nat per token.
    pi_c, pi_r = -len_c * RNG.uniform(0.2, 2, n), -len_r * RNG.uniform(0.2, 2, n)
    ref_c, ref_r = pi_c + RNG.normal(0, 2, n), pi_r + RNG.normal(0, 2, n)
    args = dict(beta=0.3, eps=0.1 if loss_type in ("sigmoid", "robust") else 0.0, gamma=0.7)
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


def test_group_advantages_match_numpy_and_equal_rewards_give_zero():
    rewards = RNG.uniform(0, 1, (6, 4))
    rewards[2] = 0.7  # a group with equal rewards
    rewards[4, 1] = np.nan  # a failed reward call
    got = np.asarray(group_advantages(jnp.asarray(rewards.reshape(-1), jnp.float32), 4)).reshape(6, 4)
    for g in range(6):
        row = rewards[g]
        want = (row - np.nanmean(row)) / (np.nanstd(row) + 1e-4)
        np.testing.assert_allclose(got[g], np.nan_to_num(want, nan=0.0), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got[2], 0.0)
    assert got[4, 1] == 0.0
    unscaled = np.asarray(group_advantages(jnp.asarray(rewards[:2].reshape(-1)), 4, scale=False)).reshape(2, 4)
    np.testing.assert_allclose(unscaled, rewards[:2] - rewards[:2].mean(1, keepdims=True), rtol=1e-5)
    assert float(zero_spread_fraction(jnp.asarray(rewards.reshape(-1)), 4)) == pytest.approx(1 / 6)
