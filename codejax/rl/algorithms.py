"""RL algorithms as records of functions, looked up by name: the RL loop (rl/loop.py) has no `== "ppo"`.

An `Algorithm` is what differs between GRPO, RLOO and PPO, in the order the loop uses it:

    add_variables(variables, model, rc, par)   more trainable collections (PPO's value head), or None
    loss_fn(model, rc, prompt_len, max_tokens)  the objective (codejax/objectives/policy.py)
    score(model, variables, batch, prompt_len)  the no-grad pass over fresh rollouts: {"old_logp": [N, T], ...}
    advantages(batch, rewards, rc, kl_coef)     (arrays to add to the batch, metrics): GRPO's group
                                                normalisation, RLOO's leave-one-out, PPO's GAE
    adapts_kl                                   the KL controller follows train/kl after each step
    group_baseline                              compares completions of one prompt: rl.group_size >= 2
    job                                         the job that runs it (grpo or ppo)

To add one: write its advantage estimator (codejax/losses/policy.py, with its formula and a
numpy check), register a row here, add a config variant, and test it; CONTRIBUTING.md
walks through an example. Nothing in the loop changes.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from codejax.losses import gae, group_advantages, kl_estimate, rloo_advantages, whiten, zero_spread_fraction
from codejax.objectives import policy as objectives
from codejax.objectives.reward import score_head_axes, zero_score_head
from codejax.objectives.variables import HEAD, VALUE, ModelVariables, policy_view


@dataclasses.dataclass(frozen=True)
class Algorithm:
    name: str
    loss_fn: Callable  # (model, rc, prompt_len, max_tokens) -> LossFn
    score: Callable  # (model, variables, batch, prompt_len) -> {"old_logp": [N, T], ...}
    advantages: Callable  # (batch, rewards [N] (NaN: no reward), rc, kl_coef) -> ({name: array}, {metric: float})
    add_variables: Callable | None = None  # (ModelVariables, model, rc, parallel) -> ModelVariables
    adapts_kl: bool = False
    group_baseline: bool = False
    job: str = "grpo"


ALGORITHMS: dict[str, Algorithm] = {}


def register_algorithm(algorithm: Algorithm) -> Algorithm:
    if algorithm.name in ALGORITHMS:
        raise ValueError(f"RL algorithm {algorithm.name!r} is already registered")
    ALGORITHMS[algorithm.name] = algorithm
    return algorithm


def get_algorithm(name: str) -> Algorithm:
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"rl.algorithm={name!r}; registered algorithms: {sorted(ALGORITHMS)}") from None


def token_mean(x: np.ndarray, mask: np.ndarray) -> float:
    return float(np.sum(x * mask) / max(np.sum(mask), 1.0))


# ------------------------------------------------------------------ scoring passes

def policy_logprobs(model, variables: dict, batch: dict, prompt_len: int) -> dict:
    return {"old_logp": objectives.completion_logprobs(model, policy_view(variables), batch, prompt_len)}


def policy_logprobs_and_values(model, variables: dict, batch: dict, prompt_len: int) -> dict:
    old_logp, old_values = objectives.policy_and_values(model, variables, batch, prompt_len)
    return {"old_logp": old_logp, "old_values": old_values}


# ------------------------------------------------------------------ advantages

def _sequence_kl(batch: dict) -> dict[str, float]:
    """GRPO/RLOO report the rollout's KL to the reference (k3, per token) when there is a KL term."""
    if "ref_logp" not in batch:
        return {}
    return {"train/kl": token_mean(np.asarray(kl_estimate(batch["old_logp"], batch["ref_logp"], "k3")), batch["mask"])}


def group_normalised(batch: dict, rewards: np.ndarray, rc, kl_coef: float):
    """GRPO: (r - group mean) / (std + eps), the std of the group or the batch, or none (Dr. GRPO): rl.scale_rewards."""
    rewards = jnp.asarray(rewards)
    adv = group_advantages(rewards, rc.group_size, scale=rc.scale_rewards)
    metrics = {"train/zero_spread_fraction": float(zero_spread_fraction(rewards, rc.group_size)), **_sequence_kl(batch)}
    return {"advantages": np.asarray(adv, np.float32)}, metrics


def leave_one_out(batch: dict, rewards: np.ndarray, rc, kl_coef: float):
    """RLOO: r minus the mean of the other completions of the same prompt."""
    rewards = jnp.asarray(rewards)
    adv = rloo_advantages(rewards, rc.group_size)
    metrics = {"train/zero_spread_fraction": float(zero_spread_fraction(rewards, rc.group_size)), **_sequence_kl(batch)}
    return {"advantages": np.asarray(adv, np.float32)}, metrics


def generalised_advantages(batch: dict, rewards: np.ndarray, rc, kl_coef: float):
    """PPO: per-token rewards (-kl_coef x KL each token, the score at the last), GAE, whitened advantages.

    A completion whose reward is NaN (a failed or inapplicable reward) leaves the loss, as in GRPO and
    RLOO: its mask row becomes 0, so it moves neither the policy, the value head nor the whitening."""
    missing = np.isnan(rewards)
    rewards = np.where(missing, 0.0, rewards)
    mask = batch["mask"] * ~missing[:, None]
    # Episodes (rl.env): tool-reply tokens are out of the loss (mask) but inside the episode ("valid"), so
    # GAE runs over every token and the score sits on the last; single-turn, the two are the same.
    valid = batch.get("valid", batch["mask"]) * ~missing[:, None]
    lengths = valid.sum(1).astype(int)
    token_rewards = np.zeros_like(mask)
    metrics = {}
    if "ref_logp" in batch:
        kl_tokens = np.asarray(kl_estimate(batch["old_logp"], batch["ref_logp"], rc.kl_estimator)) * mask
        token_rewards -= kl_coef * kl_tokens
        metrics["train/kl"] = float(np.mean(kl_tokens.sum(1)))  # per sequence, as the controller expects
    else:
        metrics["train/kl"] = 0.0
    rows = np.flatnonzero(lengths > 0)
    token_rewards[rows, lengths[rows] - 1] += rewards[rows]
    if rc.whiten_rewards:
        token_rewards = np.asarray(whiten(jnp.asarray(token_rewards), jnp.asarray(mask), shift_mean=False))
    adv, returns = gae(jnp.asarray(token_rewards), jnp.asarray(batch["old_values"]), jnp.asarray(valid), rc.gamma,
                       rc.lam)
    adv = whiten(adv, jnp.asarray(mask))
    metrics["train/value_mean"] = token_mean(batch["old_values"], mask)
    metrics["train/reward_missing_fraction"] = float(missing.mean())
    return {"advantages": np.asarray(adv, np.float32), "returns": np.asarray(returns, np.float32),
            "mask": mask.astype(batch["mask"].dtype)}, metrics


# ------------------------------------------------------------------ PPO's value function

def add_value_function(variables: ModelVariables, model, rc, par) -> ModelVariables:
    """A zero value head (values start at 0, and the value loss sends no gradient into a shared
    trunk until the head has learnt something), and with rl.value_head=separate its own model."""
    cfg = model.cfg
    variables = variables.with_trainable(HEAD, jax.device_put(zero_score_head(cfg.hidden_size),
                                                              par.param_shardings(score_head_axes())),
                                         score_head_axes())
    if rc.value_head == "separate":
        if "params" not in variables.trainable:
            raise ValueError("rl.value_head='separate' trains a full copy of the model as the value model; "
                             "with PEFT use value_head='shared'")
        axes = variables.trainable_axes["params"]
        with par.context():
            value = jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=par.param_shardings(axes))(
                variables.trainable["params"])
        variables = variables.with_trainable(VALUE, value, axes)
    elif rc.value_head != "shared":
        raise ValueError(f"rl.value_head={rc.value_head!r}; expected 'shared' or 'separate'")
    return variables


register_algorithm(Algorithm("grpo", objectives.grpo_loss_fn, policy_logprobs, group_normalised, group_baseline=True))
register_algorithm(Algorithm("rloo", objectives.grpo_loss_fn, policy_logprobs, leave_one_out, group_baseline=True))
register_algorithm(Algorithm("ppo", objectives.ppo_loss_fn, policy_logprobs_and_values, generalised_advantages,
                             add_variables=add_value_function, adapts_kl=True, job="ppo"))
