"""Losses as small pure functions, each with its formula in the docstring."""
from codejax.losses.lm import token_cross_entropy

__all__ = ["token_cross_entropy"]
