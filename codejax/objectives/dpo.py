"""The DPO-family loss function over pair batches, and the reference model it compares against.

Reference log-probs come, in order of precedence, from:
* the batch (``ref_chosen`` / ``ref_rejected``: computed once up front, see
  `precompute_reference`);
* `reference_view` of the variables: the frozen `REF` copy of the initial weights (full
  fine-tuning), or the frozen base applied without the adapter collections (PEFT: no second
  copy of the weights);
* nowhere, for the reference-free losses (SimPO, ORPO).
"""
from __future__ import annotations

from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from codejax.data.pairs import batch_rows, both_sides, padding_pair
from codejax.losses import DPO_LOSS_TYPES, dpo_loss, get_dpo_loss, sequence_logprobs
from codejax.objectives.variables import policy_view, reference_view


def check_preference_config(pc) -> None:
    """Fail fast on a bad `config.preference` for the dpo job."""
    try:
        row = get_dpo_loss(pc.loss_type)
    except ValueError as e:
        raise ValueError(f"preference.{e}") from None
    if pc.label_smoothing and not row.smoothing:
        raise ValueError(f"preference.label_smoothing={pc.label_smoothing}: loss_type={pc.loss_type!r} has no label "
                         f"smoothing (it applies to {[n for n, r in DPO_LOSS_TYPES.items() if r.smoothing]}); set it to 0")
    if not 0 <= pc.label_smoothing < row.max_label_smoothing:
        raise ValueError(f"preference.label_smoothing must be in [0, {row.max_label_smoothing}) for the "
                         f"{pc.loss_type} loss, got {pc.label_smoothing}")


def needs_reference(pc) -> bool:
    return not get_dpo_loss(pc.loss_type).reference_free


def pair_logprobs(model, variables: dict, batch: dict, rngs=None):
    """Summed completion log-probs and completion lengths: ((chosen, rejected), (len_c, len_r)), each [batch]."""
    lm = both_sides(batch)
    logits = model.apply(variables, lm["inputs"], lm["positions"], lm["segment_ids"], rngs=rngs or {})
    logp, count = sequence_logprobs(logits, lm["targets"], lm["weights"])
    n = batch["margin"].shape[0]
    return (logp[:n], logp[n:]), (count[:n], count[n:]), logits


def dpo_loss_fn(model, pc):
    """`loss_fn(variables, batch, rng)` for config.preference `pc` (loss_type, beta, ...)."""
    loss_type, beta = pc.loss_type, pc.beta
    row = get_dpo_loss(loss_type)
    length_norm = loss_type == "ipo" and pc.ipo_length_norm

    def loss_fn(variables, batch, rng):
        rngs = {} if rng is None else {"dropout": rng}
        (pi_c, pi_r), (len_c, len_r), logits = pair_logprobs(model, policy_view(variables), batch, rngs)
        valid = ((len_c > 0) & (len_r > 0)).astype(jnp.float32)  # padding pairs: 0
        if row.reference_free:
            # Their implicit rewards are the length-normalised log-probs times the loss's own scale
            # (SimPO: beta; ORPO: lambda = orpo_alpha), as TRL reports them.
            ref_c = ref_r = None
            scale = pc.orpo_alpha if row.chosen_nll else beta
            rew_c, rew_r = scale * pi_c / jnp.maximum(len_c, 1), scale * pi_r / jnp.maximum(len_r, 1)
        else:
            if "ref_chosen" in batch:
                ref_c, ref_r = batch["ref_chosen"], batch["ref_rejected"]
            else:
                (ref_c, ref_r), _, _ = pair_logprobs(model, reference_view(variables), batch)
                ref_c, ref_r = jax.lax.stop_gradient(ref_c), jax.lax.stop_gradient(ref_r)
            if length_norm:  # IPO on per-token log-ratios: its rewards are too (as TRL's)
                n_c, n_r = jnp.maximum(len_c, 1), jnp.maximum(len_r, 1)
                rew_c, rew_r = beta * (pi_c - ref_c) / n_c, beta * (pi_r - ref_r) / n_r
            else:
                rew_c, rew_r = beta * (pi_c - ref_c), beta * (pi_r - ref_r)
        losses = dpo_loss(pi_c, pi_r, ref_c, ref_r, beta=beta, loss_type=loss_type,
                          label_smoothing=pc.label_smoothing, len_c=len_c, len_r=len_r, simpo_gamma=pc.simpo_gamma,
                          length_norm=length_norm)
        sums = {"rewards/chosen": jnp.sum(valid * rew_c), "rewards/rejected": jnp.sum(valid * rew_r),
                "rewards/margin": jnp.sum(valid * (rew_c - rew_r)), "rewards/accuracy": jnp.sum(valid * (rew_c > rew_r)),
                "logps/chosen": jnp.sum(valid * pi_c), "logps/rejected": jnp.sum(valid * pi_r)}
        if row.chosen_nll:
            # ORPO = NLL of the chosen completion (per token) + alpha * the odds-ratio term.
            nll = -pi_c / jnp.maximum(len_c, 1)
            sums[f"{loss_type}/nll"] = jnp.sum(valid * nll)
            sums[f"{loss_type}/odds_ratio_loss"] = jnp.sum(valid * losses)
            losses = nll + pc.orpo_alpha * losses
        return jnp.sum(valid * losses), jnp.sum(valid), sums

    return loss_fn


def precompute_reference(model, ref_variables: dict, batches: Iterator[dict]) -> np.ndarray:
    """[pairs, 2] reference log-probs (chosen, rejected) for every pair of `batches`, in order."""
    @jax.jit
    def logps(variables, batch):
        (c, r), _, _ = pair_logprobs(model, variables, batch)
        return jnp.stack([c, r], axis=-1)

    return np.concatenate([np.asarray(logps(ref_variables, b)) for b in batches])


def reference_columns(model, ref_variables: dict, seq_len: int, batch_size: int, pad_id: int):
    """`extra` for build_pair_datasets (preference.precompute_ref): each pair row's reference
    log-probs, computed once, in batches of `batch_size` pairs."""
    filler = padding_pair(seq_len, pad_id)

    def extra(rows: list[dict]) -> list[dict]:
        logps = precompute_reference(model, ref_variables, batch_rows(rows, batch_size, filler))
        return [{"ref_chosen": np.float32(c), "ref_rejected": np.float32(r)} for c, r in logps[:len(rows)]]

    return extra
