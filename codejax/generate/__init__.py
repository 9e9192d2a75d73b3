"""Generation: a batched KV-cache sampler for every model family and PEFT method."""
from codejax.generate.sampler import SamplingParams, Samples, generate, greedy_reference, sample_logits

__all__ = ["SamplingParams", "Samples", "generate", "greedy_reference", "sample_logits"]
