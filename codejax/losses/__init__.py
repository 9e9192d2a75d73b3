"""Losses as small pure functions, each with its formula in the docstring."""
from codejax.losses.lm import token_cross_entropy, token_logprobs
from codejax.losses.policy import (KL_ESTIMATORS, LOSS_AGGS, SCALE_REWARDS, AdaptiveKLController, FixedKLController,
                                   aggregate, clipped_policy_loss, clipped_value_loss, gae, group_advantages,
                                   kl_estimate, rloo_advantages, whiten, zero_spread_fraction)
from codejax.losses.preference import (DPO_LOSS_TYPES, DPO_LOSSES, DPOLossType, bradley_terry_loss, dpo_loss,
                                       dpo_metrics, get_dpo_loss, sequence_logprobs)

__all__ = ["DPO_LOSS_TYPES", "DPO_LOSSES", "DPOLossType", "bradley_terry_loss", "dpo_loss", "dpo_metrics",
           "get_dpo_loss", "group_advantages", "sequence_logprobs", "token_cross_entropy", "token_logprobs",
           "zero_spread_fraction", "KL_ESTIMATORS", "LOSS_AGGS", "SCALE_REWARDS", "AdaptiveKLController", "FixedKLController",
           "aggregate", "clipped_policy_loss", "clipped_value_loss", "gae", "kl_estimate", "rloo_advantages", "whiten"]
