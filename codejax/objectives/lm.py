"""The causal-LM objective (pretraining and SFT): next-token cross-entropy on a packed batch."""
from __future__ import annotations

from codejax.losses import token_cross_entropy


def lm_loss_fn(model):
    """`loss_fn(variables, batch, rng) -> (loss_sum, weight_sum)` of a Transformer on packed batches.

    The rng drives dropout where the model has any (LoRA dropout); rng None means none.
    """

    def loss_fn(variables, batch, rng):
        rngs = {} if rng is None else {"dropout": rng}
        logits = model.apply(variables, batch["inputs"], batch["positions"], batch["segment_ids"], rngs=rngs)
        return token_cross_entropy(logits, batch["targets"], batch["weights"])

    return loss_fn
