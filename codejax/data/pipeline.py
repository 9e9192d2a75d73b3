"""``build_datasets``: files -> checked, tokenized examples -> grain pipelines of batches.

Design choice: **tokenize eagerly, at build time.** All rows are read, checked and tokenized
(in fast batched tokenizer calls) before the first batch. That costs start-up time and keeps
the tokenized corpus in memory (a few bytes per token, see :mod:`codejax.data.examples`),
and buys:

* every malformed row is found, and every skip, truncation and drop counted, up front, so
  ``Datasets.stats`` is complete before training starts and a bad file fails in seconds,
  not hours into a run;
* the eval split and the over-length policy are whole-dataset decisions made once;
* the grain pipeline is then a pure function of index -> example over numpy arrays: random
  access, global shuffling per epoch, and an iterator state of a few integers.

Corpora too large for memory would want a streaming source instead; that is not built here.

The training pipeline, in grain terms::

    MapDataset.source(examples) .shuffle(seed)      # a new permutation every epoch
      .repeat(num_epochs)                           # None: forever
      .map(to_training_row)                         # next-token shift
      .to_iter_dataset()                            # in-process (data is in memory)
      -> FirstFitPackIterDataset | map(pad_row)     # pack=True | one example per row
      .batch(batch_size, drop_remainder=True)
      -> state check                                # refuses state from other data/config

``iter(datasets.train)`` is a grain ``DatasetIterator``: ``get_state()`` returns a small
JSON-serialisable dict and ``set_state()`` on a fresh iterator of an identically built
pipeline continues with exactly the batches the original would have produced.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import grain
import numpy as np

from codejax.data import sources
from codejax.data.builtin import BUILTIN
from codejax.data.errors import DataError, SkipPolicy
from codejax.data.examples import OVERLENGTH_POLICIES, TokenizedExamples, fit_to_seq_len, split_eval
from codejax.data.formats import FormatSpec, parse_row, tokenize_parsed
from codejax.data.packing import pack_rows, pad_batch, pad_row, to_training_row

logger = logging.getLogger(__name__)

Batch = dict[str, np.ndarray]
# Rows are checked and tokenized this many at a time: big enough for batched tokenizer
# calls to pay off, small enough that the raw rows of one chunk are cheap to hold.
_CHUNK_ROWS = 1024
# The data is in memory, so grain's reader threads would only contend for the GIL.
READ_OPTIONS = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)


@dataclasses.dataclass(frozen=True)
class Datasets:
    """What the training loop consumes.

    ``train``: a grain ``IterDataset`` of batches (dicts of ``[batch_size, seq_len]`` arrays,
    keys in :data:`codejax.data.packing.ROW_KEYS`); ``iter()`` it for a checkpointable iterator.
    ``eval``: ``None``, or a zero-argument function returning a fresh iterator over the whole
    eval set once, in a fixed order, the last batch filled with zero-weight padding rows.
    ``stats``: counts to log as metrics (see :func:`build_datasets`).
    """

    train: grain.IterDataset
    eval: Callable[[], Iterator[Batch]] | None
    stats: dict[str, int]
    pad_id: int
    seq_len: int


def read_checked(paths, parse: Callable[[dict, str], Any], tokenize: Callable[[list, list[str]], list], *,
                 hf_split: str, policy: SkipPolicy) -> tuple[list, int]:
    """Read every row of ``paths``, check it (``parse(row, where)``) and tokenize the checked rows
    a chunk at a time (``tokenize(parsed, wheres)``); a bad row raises or is counted by ``policy``.
    Returns the tokenized items and the number of rows read."""
    out, rows_read = [], 0
    rows = sources.read_rows(paths, hf_split=hf_split)
    while chunk := list(itertools.islice(rows, _CHUNK_ROWS)):
        rows_read += len(chunk)
        parsed, wheres = [], []
        for where, row in chunk:
            try:
                if isinstance(row, DataError):
                    raise row
                parsed.append(parse(row, where))
                wheres.append(where)
            except DataError as e:
                policy.handle(e)
        out.extend(tokenize(parsed, wheres))
    return out, rows_read


def load_examples(paths, spec: FormatSpec, tokenizer, *, hf_split: str,
                  policy: SkipPolicy) -> tuple[TokenizedExamples, int]:
    """Read, check and tokenize every row of ``paths``; returns the examples and rows read."""
    examples, rows_read = read_checked(
        paths, lambda row, where: parse_row(spec, row, where),
        lambda parsed, _: tokenize_parsed(spec, tokenizer, parsed), hf_split=hf_split, policy=policy)
    return TokenizedExamples.from_examples(examples), rows_read


def mixed_seed(seed: int) -> int:
    """A 32-bit seed for grain's shuffle, mixed so that nearby seeds are unrelated.

    grain shuffles epoch ``e`` with ``seed + e``; feeding it the user's seed directly would
    make seed 1's first epoch equal seed 0's second.
    """
    return int(np.random.SeedSequence(seed).generate_state(1)[0])


def _rows(examples: TokenizedExamples, *, seq_len: int, pad_id: int, pack: bool,
          num_bins: int, shuffle_seed: int | None = None,
          num_epochs: int | None = 1) -> grain.IterDataset:
    """Examples (optionally shuffled per epoch, repeated) as ``seq_len`` training rows."""
    ds = grain.MapDataset.source(examples)
    if shuffle_seed is not None:
        ds = ds.shuffle(seed=shuffle_seed)
    ds = ds.repeat(num_epochs).map(to_training_row).to_iter_dataset(READ_OPTIONS)
    if pack:
        return pack_rows(ds, seq_len, pad_id, num_bins=num_bins)
    return ds.map(functools.partial(pad_row, seq_len=seq_len, pad_id=pad_id))


class StateCheckedIterator(grain.DatasetIterator):
    """Passes batches through; tags the state so it cannot be restored into other data."""

    def __init__(self, parent: grain.DatasetIterator, fingerprint: str):
        super().__init__(parent)
        self._fingerprint = fingerprint

    def __next__(self) -> Batch:
        return next(self._parent)

    def get_state(self) -> dict:
        return {"fingerprint": self._fingerprint, "pipeline": self._parent.get_state()}

    def set_state(self, state: dict) -> None:
        if state.get("fingerprint") != self._fingerprint:
            raise ValueError(
                f"iterator state was saved by a pipeline over different data or config "
                f"(fingerprint {state.get('fingerprint')!r}, this pipeline "
                f"{self._fingerprint!r}); restoring it would not reproduce the batches")
        self._parent.set_state(state["pipeline"])


class StateCheckedIterDataset(grain.IterDataset):
    def __init__(self, parent: grain.IterDataset, fingerprint: str):
        super().__init__(parent)
        self._fingerprint = fingerprint

    def __iter__(self) -> StateCheckedIterator:
        return StateCheckedIterator(self._parent.__iter__(), self._fingerprint)

    def __str__(self) -> str:
        return f"StateCheckedIterDataset(fingerprint={self._fingerprint})"


def _eval_iterator_fn(examples: TokenizedExamples, *, seq_len: int, batch_size: int,
                      pad_id: int, pack: bool) -> Callable[[], Iterator[Batch]]:
    rows = _rows(examples, seq_len=seq_len, pad_id=pad_id, pack=pack, num_bins=batch_size)
    batches = rows.batch(batch_size, drop_remainder=False)

    def make_eval_iterator() -> Iterator[Batch]:
        """Every eval example exactly once, in a fixed order; a fresh pass on every call."""
        for batch in batches:
            yield pad_batch(batch, batch_size, pad_id)

    return make_eval_iterator


def _check_config(*, fmt, seq_len, batch_size, eval_batch_size, eval_fraction, eval_paths,
                  seed, num_epochs, overlength) -> None:
    if overlength not in OVERLENGTH_POLICIES:
        raise ValueError(f"overlength must be one of {OVERLENGTH_POLICIES}, got {overlength!r}")
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if eval_batch_size is not None and eval_batch_size < 1:
        raise ValueError(f"eval_batch_size must be >= 1 or None, got {eval_batch_size}")
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    if eval_fraction > 0 and eval_paths is not None:
        raise ValueError("give either eval_paths or eval_fraction > 0, not both")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1 or None (forever), got {num_epochs}")


def build_datasets(*, tokenizer, train_paths, eval_paths=None, fmt: str, seq_len: int,
                   batch_size: int, eval_batch_size: int | None = None,
                   eval_fraction: float = 0.0, seed: int = 0, shuffle: bool = True,
                   num_epochs: int | None = None, pack: bool = True,
                   overlength: str = "truncate", truncation_side: str = "right", skip_bad_rows: bool = False,
                   text_field: str = "text", prompt_template: str | None = None,
                   hf_split: str = "train") -> Datasets:
    """Build the train (and eval) pipelines for ``fmt`` rows in ``train_paths``.

    See :mod:`codejax.data.sources` for the accepted paths, :mod:`codejax.data.formats` for
    formats and loss masks, :mod:`codejax.data.packing` for the batch layout. The eval set is
    ``eval_paths`` if given, else an ``eval_fraction`` held out of the training rows by
    :func:`codejax.data.examples.split_eval` (seeded by ``seed``, disjoint by content), else
    none. ``eval_batch_size`` defaults to ``batch_size``.

    ``stats`` keys: ``rows_read`` (all sources), ``rows_skipped`` and
    ``rows_skipped/<reason>`` (only with ``skip_bad_rows``; otherwise the first bad row
    raises :class:`DataError`), and for the training set ``examples``,
    ``examples_truncated``, ``examples_dropped_overlength``, ``examples_dropped_no_loss``,
    ``tokens`` (target positions per epoch), ``loss_tokens`` (weighted targets per
    epoch), ``longest_example`` and ``seq_len_p99`` (positions), and ``longest_prompt`` when
    some examples are over-long; the same per-example keys prefixed ``eval_`` describe the eval set.
    """
    _check_config(fmt=fmt, seq_len=seq_len, batch_size=batch_size, eval_batch_size=eval_batch_size,
                  eval_fraction=eval_fraction, eval_paths=eval_paths, seed=seed,
                  num_epochs=num_epochs, overlength=overlength)
    spec = FormatSpec(fmt, text_field=text_field, prompt_template=prompt_template)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    policy = SkipPolicy(skip_bad_rows)
    stats = Counter(rows_read=0, rows_skipped=0)

    train, stats["rows_read"] = load_examples(train_paths, spec, tokenizer, hf_split=hf_split,
                                              policy=policy)
    evaluation = None
    if eval_paths is not None:
        evaluation, eval_rows = load_examples(eval_paths, spec, tokenizer, hf_split=hf_split,
                                              policy=policy)
        stats["rows_read"] += eval_rows
    elif eval_fraction > 0 and len(train):
        train_idx, eval_idx = split_eval(train, eval_fraction, seed)
        train, evaluation = train.gather(train_idx), train.gather(eval_idx)

    train, train_stats = fit_to_seq_len(train, seq_len, overlength, truncation_side)
    stats.update(train_stats)
    if not len(train):
        if not stats["rows_read"]:
            raise ValueError(f"{', '.join(sources.resolve_paths(train_paths))}: empty file (no rows to train on)")
        raise ValueError(f"no training examples left from {train_paths!r} (stats: {dict(stats)})")
    eval_fn = None
    if evaluation is not None:
        evaluation, eval_stats = fit_to_seq_len(evaluation, seq_len, overlength, truncation_side)
        stats.update({f"eval_{k}": v for k, v in eval_stats.items()})
        if not len(evaluation):
            logger.warning("The eval set is empty after fitting to seq_len=%d: %s", seq_len, eval_stats)
        eval_fn = _eval_iterator_fn(evaluation, seq_len=seq_len, pad_id=pad_id, pack=pack,
                                    batch_size=eval_batch_size or batch_size)
    stats.update(policy.counts)

    config = dict(data=train.fingerprint(), seq_len=seq_len, batch_size=batch_size, pad_id=pad_id,
                  pack=pack, seed=seed, shuffle=shuffle, num_epochs=num_epochs)
    fingerprint = hashlib.blake2b(json.dumps(config, sort_keys=True).encode(),
                                  digest_size=8).hexdigest()
    rows = _rows(train, seq_len=seq_len, pad_id=pad_id, pack=pack, num_bins=batch_size,
                 shuffle_seed=mixed_seed(seed) if shuffle else None, num_epochs=num_epochs)
    train_ds = StateCheckedIterDataset(rows.batch(batch_size, drop_remainder=True), fingerprint)
    logger.debug("Data: %s", dict(stats))
    return Datasets(train=train_ds, eval=eval_fn, stats={k: int(v) for k, v in stats.items()},
                    pad_id=int(pad_id), seq_len=seq_len)


def datasets_from_config(config, tokenizer) -> Datasets:
    """`build_datasets` for a run's config: its `data` section and seed (a given eval set replaces the split)."""
    dc = config.data
    if not dc.train_paths:
        raise ValueError("data.train_paths is empty: give local JSONL/JSON/parquet files or a saved HF dataset "
                         "(or data.train_paths=builtin for codejax's small built-in set)")
    if dc.train_paths == BUILTIN or dc.train_paths.startswith(BUILTIN + ":"):
        raise ValueError("data.train_paths='builtin' is resolved by the job runner (codejax.jobs.get_job); in your "
                         "own code pass config through codejax.builtin.resolve_builtin_data(config) first")
    eval_paths = sources.split_paths(dc.eval_paths) or None
    return build_datasets(
        tokenizer=tokenizer, train_paths=sources.split_paths(dc.train_paths), eval_paths=eval_paths,
        fmt=dc.format, seq_len=dc.seq_len, batch_size=dc.batch_size, eval_batch_size=dc.eval_batch_size or None,
        eval_fraction=0.0 if eval_paths else dc.eval_fraction, seed=config.seed, shuffle=dc.shuffle,
        num_epochs=dc.num_epochs or None, pack=dc.pack, overlength=dc.overlength,
        truncation_side=dc.truncation_side, skip_bad_rows=dc.skip_bad_rows,
        text_field=dc.text_field, prompt_template=dc.prompt_template or None, hf_split=dc.hf_split)
