"""Generation: a batched KV-cache sampler for every model family and PEFT method."""
from codejax.generate.sampler import SamplingParams, Samples, generate, greedy_reference, sample_logits

__all__ = ["SamplingParams", "Samples", "generate", "greedy_reference", "sample_logits"]
from codejax.generate.turns import Episodes, generate_turns  # noqa: E402 - turns builds on sampler

__all__ += ["Episodes", "generate_turns"]
