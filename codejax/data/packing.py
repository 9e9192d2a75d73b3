"""Examples -> fixed-length training rows: next-token shift, padding, packing.

Every row (and so every batch) has the same five ``[..., seq_len]`` arrays:

==============  =======  ===========================================================
key             dtype    meaning
==============  =======  ===========================================================
``inputs``      int32    token fed to the model at each position (pad id on padding)
``targets``     int32    the next token, to be predicted (pad id on padding)
``weights``     float32  1.0 where the target counts in the loss, else 0.0
``segment_ids`` int32    1, 2, 3, ... for each example packed in the row; 0 on padding
``positions``   int32    position within its own example (restarts at 0); 0 on padding
==============  =======  ===========================================================

Attention must stay within a segment (``segment_ids`` equal and non-zero) and rotary
positions come from ``positions``, so packed examples never see each other. Loss code must
use ``weights`` only: padding has weight 0 and a real eos (same id as pad) has weight 1.
"""

from __future__ import annotations

import grain
import numpy as np

from codejax.data.formats import Example

ROW_KEYS = ("inputs", "targets", "weights", "segment_ids", "positions")
_PACKED_KEYS = ("inputs", "targets", "weights")


def to_training_row(example: Example) -> dict[str, np.ndarray]:
    """``ids[0..n]`` -> ``inputs = ids[:-1]``, ``targets = ids[1:]``, ``weights = mask[1:]``."""
    ids, mask = example
    return {"inputs": ids[:-1].astype(np.int32), "targets": ids[1:].astype(np.int32),
            "weights": mask[1:].astype(np.float32)}


def padding_row(seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
    """A row of nothing: pad tokens, zero weight, segment 0. Fills out short eval batches."""
    return {"inputs": np.full(seq_len, pad_id, np.int32),
            "targets": np.full(seq_len, pad_id, np.int32),
            "weights": np.zeros(seq_len, np.float32),
            "segment_ids": np.zeros(seq_len, np.int32),
            "positions": np.zeros(seq_len, np.int32)}


def pad_row(row: dict[str, np.ndarray], seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
    """One example alone in a row (segment 1), padded on the right to ``seq_len``."""
    n = len(row["inputs"])
    if n > seq_len:
        raise ValueError(f"row of {n} positions does not fit seq_len={seq_len}")
    out = padding_row(seq_len, pad_id)
    for key in _PACKED_KEYS:
        out[key][:n] = row[key]
    out["segment_ids"][:n] = 1
    out["positions"][:n] = np.arange(n, dtype=np.int32)
    return out


def _rename_packed(row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # grain emits segment ids and positions per packed feature; all three features share one
    # layout (they have equal lengths), so keep the copies made for "inputs".
    return {"inputs": row["inputs"], "targets": row["targets"], "weights": row["weights"],
            "segment_ids": row["inputs_segment_ids"], "positions": row["inputs_positions"]}


def pack_rows(rows: grain.IterDataset, seq_len: int, pad_id: int,
              num_bins: int) -> grain.IterDataset:
    """First-fit pack variable-length rows into ``seq_len`` rows with grain's packer.

    grain's ``FirstFitPackIterDataset`` keeps ``num_bins`` rows open and places each example
    in the first with room; when one does not fit anywhere, all open rows are emitted (in
    order; ``shuffle_bins=False`` since the examples are already shuffled). Its iterator
    state is the upstream state at the last fully emitted group plus a row counter, so a
    restored iterator re-packs the same group and resumes at the same row: resume is exact.
    At end of input the partly filled group is emitted too, so no example is lost.
    """
    packed = grain.experimental.FirstFitPackIterDataset(
        rows,
        length_struct={k: seq_len for k in _PACKED_KEYS},
        num_packing_bins=num_bins,
        shuffle_bins=False,
        padding_struct={"inputs": pad_id, "targets": pad_id, "weights": 0.0},
    )
    return packed.map(_rename_packed)


def pad_batch(batch: dict[str, np.ndarray], batch_size: int, pad_id: int) -> dict[str, np.ndarray]:
    """Append all-padding rows until ``batch`` has ``batch_size`` rows (for the last eval batch)."""
    have = len(batch["inputs"])
    if have == batch_size:
        return batch
    filler = padding_row(batch["inputs"].shape[1], pad_id)
    return {k: np.concatenate([batch[k], np.broadcast_to(filler[k], (batch_size - have,) +
                                                         filler[k].shape)]) for k in ROW_KEYS}
