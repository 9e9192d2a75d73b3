"""A compact in-memory store of tokenized examples, and the build-time steps that act on it.

Examples are tokenized once, when the pipeline is built (see :mod:`codejax.data.pipeline`
for why), and kept as three flat numpy arrays rather than a list of small arrays: a few
bytes per token, cheap to slice, hash and pickle into grain worker processes.

This module also holds the two whole-dataset steps that must happen before shuffling:
fitting examples to ``seq_len`` (truncate or drop, counted) and the held-out eval split.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from collections.abc import Sequence

import numpy as np

from codejax.data.formats import Example

OVERLENGTH_POLICIES = ("truncate", "drop")


def _ragged_gather(flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate ``flat[s:s+n]`` for each (s, n), without a Python loop."""
    total = int(lengths.sum())
    segment_begin = np.cumsum(lengths) - lengths  # where each piece starts in the output
    return flat[np.arange(total) + np.repeat(starts - segment_begin, lengths)]


@dataclasses.dataclass(frozen=True, eq=False)
class TokenizedExamples:
    """Example ``i`` is ``(ids[offsets[i]:offsets[i+1]], mask[...])``; a grain data source."""

    ids: np.ndarray  # int32 [total_tokens]
    mask: np.ndarray  # uint8 [total_tokens], 1 where the token is a training target
    offsets: np.ndarray  # int64 [num_examples + 1]

    @classmethod
    def from_examples(cls, examples: Sequence[Example]) -> TokenizedExamples:
        lengths = np.fromiter((len(ids) for ids, _ in examples), dtype=np.int64, count=len(examples))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        if not examples:
            return cls(np.zeros(0, np.int32), np.zeros(0, np.uint8), offsets)
        return cls(np.concatenate([ids for ids, _ in examples]).astype(np.int32),
                   np.concatenate([mask for _, mask in examples]).astype(np.uint8), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> Example:
        start, stop = self.offsets[i], self.offsets[i + 1]
        return self.ids[start:stop], self.mask[start:stop]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def gather(self, indices: np.ndarray, max_length: int | None = None, keep_end: bool = False) -> TokenizedExamples:
        """The examples at ``indices`` (in that order), each cut to at most ``max_length`` ids: its
        first ones, or with ``keep_end`` its last ones (left truncation: the prompt loses its start)."""
        indices = np.asarray(indices, dtype=np.int64)
        full = self.lengths[indices]
        lengths = full if max_length is None else np.minimum(full, max_length)
        starts = self.offsets[:-1][indices] + (full - lengths if keep_end else 0)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return TokenizedExamples(_ragged_gather(self.ids, starts, lengths),
                                 _ragged_gather(self.mask, starts, lengths), offsets)

    def fingerprint(self) -> str:
        """A short content hash: restoring iterator state into different data is an error."""
        h = hashlib.blake2b(digest_size=8)
        for array in (self.ids, self.mask, self.offsets):
            h.update(np.ascontiguousarray(array).tobytes())
        return h.hexdigest()


TRUNCATION_SIDES = ("right", "left")


def _prompt_length(mask: np.ndarray) -> int:
    """Leading positions without loss: the prompt of an SFT example (all of it when nothing trains)."""
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else int(mask.size)


def fit_to_seq_len(examples: TokenizedExamples, seq_len: int, overlength: str,
                   truncation_side: str = "right") -> tuple[TokenizedExamples, collections.Counter]:
    """Make every example fit one row of ``seq_len`` next-token positions, and count.

    An example of ``n`` ids trains ``n - 1`` positions (inputs ``ids[:-1]``, targets
    ``ids[1:]``), so it fits when ``n - 1 <= seq_len``. Longer ones are cut to ``seq_len + 1``
    ids (``"truncate"``; the cut removes the final eos, which is the honest outcome: the
    model did not see where the example ends) or removed (``"drop"``). An example left with no
    weighted target (e.g. a prompt longer than ``seq_len``) teaches nothing and is removed too,
    counted as ``examples_dropped_no_loss``.

    ``truncation_side="left"`` cuts from the start instead, so an over-long prompt loses its
    beginning and the completion (and its eos) is kept, as DPO does with its prompts.

    Counts: ``examples``, ``examples_truncated``, ``examples_dropped_overlength``,
    ``examples_dropped_no_loss``, ``tokens`` (next-token positions, i.e. targets) and
    ``loss_tokens`` (targets with weight 1); for the truncation warning, ``longest_example``,
    ``longest_prompt`` (over the over-long examples) and ``seq_len_p99`` (the seq_len that fits
    99% of the examples whole).
    """
    if overlength not in OVERLENGTH_POLICIES:
        raise ValueError(f"data.overlength must be one of {OVERLENGTH_POLICIES}, got {overlength!r}")
    if truncation_side not in TRUNCATION_SIDES:
        raise ValueError(f"data.truncation_side must be one of {TRUNCATION_SIDES}, got {truncation_side!r}")
    stats = collections.Counter()
    positions = examples.lengths - 1
    too_long = positions > seq_len
    if len(examples):
        stats["longest_example"] = int(positions.max())
        stats["seq_len_p99"] = int(np.percentile(positions, 99, method="higher"))
    if too_long.any():
        stats["longest_prompt"] = max(_prompt_length(examples[i][1]) for i in np.flatnonzero(too_long))
    dropping = overlength == "drop"
    stats["examples_truncated"] = 0 if dropping else int(too_long.sum())
    stats["examples_dropped_overlength"] = int(too_long.sum()) if dropping else 0
    keep = np.flatnonzero(~too_long) if dropping else np.arange(len(examples))
    fitted = examples.gather(keep, max_length=seq_len + 1, keep_end=truncation_side == "left")
    # Weighted targets per example: the mask summed over each example minus its first
    # token, which is only ever an input. (Every example has >= 2 ids, so reduceat is safe.)
    per_example_mask = np.add.reduceat(fitted.mask.astype(np.int64), fitted.offsets[:-1]) \
        if len(fitted) else np.zeros(0, np.int64)
    loss_tokens = per_example_mask - fitted.mask[fitted.offsets[:-1]]
    has_loss = loss_tokens > 0
    stats["examples_dropped_no_loss"] = int((~has_loss).sum())
    if not has_loss.all():
        fitted = fitted.gather(np.flatnonzero(has_loss))
        loss_tokens = loss_tokens[has_loss]
    stats["examples"] = len(fitted)
    stats["tokens"] = int((fitted.lengths - 1).sum())
    stats["loss_tokens"] = int(loss_tokens.sum())
    return fitted, stats


def example_digests(examples: TokenizedExamples, seed: int) -> np.ndarray:
    """A seeded 64-bit hash of each example's ids and mask (identical examples collide)."""
    key = int(seed).to_bytes(8, "little", signed=True)
    digests = np.empty(len(examples), dtype=np.uint64)
    for i in range(len(examples)):
        ids, mask = examples[i]
        h = hashlib.blake2b(ids.tobytes(), digest_size=8, key=key)
        h.update(mask.tobytes())
        digests[i] = int.from_bytes(h.digest(), "little")
    return digests


def split_eval(examples: TokenizedExamples, fraction: float,
               seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, eval)``: a seeded, content-hashed hold-out of about ``fraction``.

    Examples are ordered by a seeded hash of their tokens and the eval set takes the lowest
    hashes until it holds ``max(1, round(fraction * n))`` examples. Identical examples hash
    alike and always land on the same side, so a duplicated row can never be in both train
    and eval. The choice depends only on each example's content and the seed, not on file
    order. Both index arrays are returned in their original (file) order.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1) (0 means no split: leave it out), got {fraction}")
    n = len(examples)
    target = max(1, round(fraction * n))
    groups, group_of, group_sizes = np.unique(example_digests(examples, seed),
                                              return_inverse=True, return_counts=True)
    num_eval_groups = int(np.searchsorted(np.cumsum(group_sizes), target)) + 1
    is_eval = group_of < num_eval_groups  # np.unique sorts groups by digest
    if is_eval.all():
        raise ValueError(f"eval_fraction={fraction} of {n} examples leaves no training "
                         f"examples ({len(groups)} distinct)")
    return np.flatnonzero(~is_eval), np.flatnonzero(is_eval)
