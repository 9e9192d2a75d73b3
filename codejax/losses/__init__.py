"""Losses as small pure functions, each with its formula in the docstring."""
from codejax.losses.lm import token_cross_entropy
from codejax.losses.preference import (DPO_LOSSES, bradley_terry_loss, dpo_loss, dpo_metrics, group_advantages,
                                       sequence_logprobs, zero_spread_fraction)

__all__ = ["DPO_LOSSES", "bradley_terry_loss", "dpo_loss", "dpo_metrics", "group_advantages", "sequence_logprobs",
           "token_cross_entropy", "zero_spread_fraction"]
