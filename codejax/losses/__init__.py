"""Losses as small pure functions, each with its formula in the docstring."""
from codejax.losses.lm import token_cross_entropy
from codejax.losses.preference import (DPO_LOSSES, bradley_terry_loss, dpo_loss, dpo_metrics, group_advantages,
                                       sequence_logprobs, zero_spread_fraction)
from codejax.losses.policy import (KL_ESTIMATORS, LOSS_AGGS, AdaptiveKLController, FixedKLController, aggregate,
                                   clipped_policy_loss, clipped_value_loss, gae, kl_estimate, rloo_advantages, whiten)

__all__ = ["DPO_LOSSES", "bradley_terry_loss", "dpo_loss", "dpo_metrics", "group_advantages", "sequence_logprobs",
           "token_cross_entropy", "zero_spread_fraction",
           "KL_ESTIMATORS", "LOSS_AGGS", "AdaptiveKLController", "FixedKLController", "aggregate",
           "clipped_policy_loss", "clipped_value_loss", "gae", "kl_estimate", "rloo_advantages", "whiten"]
