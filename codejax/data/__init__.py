"""Data pipeline: local files -> checked, tokenized, loss-masked, packed grain batches.

Typical use, from a training job::

    data = build_datasets(tokenizer=tok, train_paths=["data/train-*.jsonl"], fmt="alpaca",
                          seq_len=2048, batch_size=32, eval_fraction=0.02, seed=0)
    it = iter(data.train)           # it.get_state() / it.set_state(...) for checkpoints
    batch = next(it)                # dict of [32, 2048] arrays, see packing.ROW_KEYS
    for eval_batch in data.eval():  # the whole eval set once
        ...
    metrics.update(data.stats)      # rows read/skipped, truncations, token counts

Modules: ``sources`` (files -> rows with provenance), ``formats`` (rows -> ids + loss mask),
``examples`` (in-memory store, seq_len fitting, eval split), ``packing`` (rows and batches
layout), ``pipeline`` (grain assembly), ``errors`` (DataError, skip counting).
"""

from codejax.data.errors import DataError
from codejax.data.examples import TokenizedExamples, fit_to_seq_len, split_eval
from codejax.data.formats import (
    ALPACA_PROMPT,
    ALPACA_PROMPT_NO_INPUT,
    CHAT_ROLES,
    FORMATS,
    FormatSpec,
    parse_row,
    tokenize_parsed,
)
from codejax.data.packing import ROW_KEYS, pack_rows, pad_batch, pad_row, padding_row, to_training_row
from codejax.data.pipeline import Datasets, build_datasets, load_examples
from codejax.data.sources import read_rows, resolve_paths

__all__ = [
    "ALPACA_PROMPT",
    "ALPACA_PROMPT_NO_INPUT",
    "CHAT_ROLES",
    "FORMATS",
    "ROW_KEYS",
    "DataError",
    "Datasets",
    "FormatSpec",
    "TokenizedExamples",
    "build_datasets",
    "fit_to_seq_len",
    "load_examples",
    "pack_rows",
    "pad_batch",
    "pad_row",
    "padding_row",
    "parse_row",
    "read_rows",
    "resolve_paths",
    "split_eval",
    "to_training_row",
    "tokenize_parsed",
]
