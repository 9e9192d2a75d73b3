"""Tests for the row layout: next-token shift, packing invariants, over-length handling, eval."""

import collections

import numpy as np
import pytest
from data_helpers import alpaca_rows, text_rows, write_jsonl

from codejax.data import (
    ROW_KEYS,
    TokenizedExamples,
    build_datasets,
    fit_to_seq_len,
    pad_batch,
    pad_row,
    padding_row,
    to_training_row,
)

SEQ_LEN = 64


def _segments(batch):
    """Each packed example as (inputs, targets, weights), recovered from segment ids."""
    out = []
    for r in range(batch["inputs"].shape[0]):
        seg = batch["segment_ids"][r]
        for s in np.unique(seg[seg > 0]):
            where = seg == s
            out.append(tuple(batch[k][r][where] for k in ("inputs", "targets", "weights")))
    return out


def _example_ids(segment):
    """The original ids of an example: its inputs plus the final target."""
    inputs, targets, _ = segment
    return tuple(inputs.tolist()) + (int(targets[-1]),)


def test_to_training_row_shifts_by_one():
    ids, mask = np.array([5, 6, 7, 0], np.int32), np.array([0, 0, 1, 1], np.uint8)
    row = to_training_row((ids, mask))
    assert row["inputs"].tolist() == [5, 6, 7] and row["targets"].tolist() == [6, 7, 0]
    assert row["weights"].tolist() == [0.0, 1.0, 1.0] and row["weights"].dtype == np.float32


def test_pad_row_and_pad_batch():
    row = pad_row(to_training_row((np.array([5, 6, 7], np.int32), np.ones(3, np.uint8))), 5, pad_id=9)
    assert row["inputs"].tolist() == [5, 6, 9, 9, 9] and row["targets"].tolist() == [6, 7, 9, 9, 9]
    assert row["segment_ids"].tolist() == [1, 1, 0, 0, 0] and row["positions"].tolist() == [0, 1, 0, 0, 0]
    assert row["weights"].tolist() == [1, 1, 0, 0, 0]
    batch = pad_batch({k: v[None] for k, v in row.items()}, 3, pad_id=9)
    assert all(batch[k].shape == (3, 5) for k in ROW_KEYS)
    for k in ROW_KEYS:
        assert np.array_equal(batch[k][1], padding_row(5, 9)[k])


@pytest.fixture(scope="module")
def packed(tok, tmp_path_factory):
    path = write_jsonl(tmp_path_factory.mktemp("pack") / "t.jsonl", text_rows(40))
    return path, build_datasets(tokenizer=tok, train_paths=path, fmt="text", seq_len=SEQ_LEN,
                                batch_size=4, num_epochs=1, eval_fraction=0.25, eval_batch_size=3)


def _check_row_invariants(batch, pad_id):
    assert set(batch) == set(ROW_KEYS)
    assert batch["inputs"].dtype == np.int32 and batch["targets"].dtype == np.int32
    assert batch["weights"].dtype == np.float32 and batch["segment_ids"].dtype == np.int32
    assert batch["positions"].dtype == np.int32
    for r in range(batch["inputs"].shape[0]):
        seg, pos = batch["segment_ids"][r], batch["positions"][r]
        real = seg > 0
        # Segments are 1, 2, 3, ... left to right, padding only at the end.
        n = int(real.sum())
        assert real[:n].all() and not real[n:].any()
        if n:
            changes = np.flatnonzero(np.diff(seg[:n])) + 1
            assert seg[0] == 1 and (np.diff(seg[:n]) >= 0).all()
            assert seg[:n].max() == len(changes) + 1
            # Positions restart at 0 at each segment start and count up within it.
            starts = np.concatenate([[0], changes])
            assert (pos[starts] == 0).all()
            expected = np.arange(n) - np.repeat(starts, np.diff(np.concatenate([starts, [n]])))
            assert np.array_equal(pos[:n], expected)
        # Padding: pad ids, no weight, position 0.
        assert (batch["weights"][r][~real] == 0).all() and (pos[~real] == 0).all()
        assert (batch["inputs"][r][~real] == pad_id).all() and (batch["targets"][r][~real] == pad_id).all()


def test_packed_train_batches_keep_the_invariants(packed):
    _, data = packed
    batches = list(data.train)
    assert batches and all(b["inputs"].shape == (4, SEQ_LEN) for b in batches)
    for batch in batches:
        _check_row_invariants(batch, data.pad_id)
        for inputs, targets, weights in _segments(batch):
            assert np.array_equal(inputs[1:], targets[:-1])  # one example, shifted by one
            assert targets[-1] == data.pad_id and weights[-1] == 1.0  # eos == pad, still weighted
    # Packing puts several examples in a row.
    assert max(b["segment_ids"].max() for b in batches) >= 2


def test_eval_yields_every_example_exactly_once_with_padded_last_batch(tok, packed):
    path, data = packed
    batches = list(data.eval())
    assert all(b["inputs"].shape == (3, SEQ_LEN) for b in batches)
    for batch in batches:
        _check_row_invariants(batch, data.pad_id)
    seen = collections.Counter(_example_ids(s) for b in batches for s in _segments(b))
    # The held-out examples, rebuilt independently from the same split.
    from codejax.data import FormatSpec, load_examples, split_eval
    from codejax.data.errors import SkipPolicy

    examples, _ = load_examples(path, FormatSpec("text"), tok, hf_split="train", policy=SkipPolicy(False))
    _, eval_idx = split_eval(examples, 0.25, seed=0)
    expected = collections.Counter(tuple(examples[i][0].tolist()) for i in eval_idx)
    assert seen == expected and sum(seen.values()) == data.stats["eval_examples"] == 10
    assert sum(float(b["weights"].sum()) for b in batches) == data.stats["eval_loss_tokens"]
    # A second call starts over and gives the same batches.
    again = list(data.eval())
    assert len(again) == len(batches)
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(again, batches) for k in ROW_KEYS)


def test_eval_last_batch_is_padded_with_zero_weight_rows(tok, tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", text_rows(12))
    data = build_datasets(tokenizer=tok, train_paths=path, eval_paths=path, fmt="text",
                          seq_len=SEQ_LEN, batch_size=5, pack=False)
    batches = list(data.eval())
    assert [b["inputs"].shape[0] for b in batches] == [5, 5, 5]
    last = batches[-1]
    assert (last["segment_ids"][:2] > 0).any(axis=1).all()
    assert (last["weights"][2:] == 0).all() and (last["segment_ids"][2:] == 0).all()


def test_unpacked_rows_hold_one_example_each(tok, tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", text_rows(10))
    data = build_datasets(tokenizer=tok, train_paths=path, fmt="text", seq_len=SEQ_LEN,
                          batch_size=2, num_epochs=1, pack=False)
    batches = list(data.train)
    assert len(batches) == 5
    for batch in batches:
        _check_row_invariants(batch, data.pad_id)
        assert batch["segment_ids"].max(axis=1).tolist() == [1, 1]


def _store(lengths, prompt=0):
    """Examples of the given lengths; the first ``prompt`` tokens of each are unweighted."""
    examples = []
    for i, n in enumerate(lengths):
        mask = np.ones(n, np.uint8)
        mask[:prompt] = 0
        examples.append((np.arange(n, dtype=np.int32) + 100 * i, mask))
    return TokenizedExamples.from_examples(examples)


def test_overlength_truncate_keeps_the_first_seq_len_positions():
    store = _store([5, 11, 12, 30])
    fitted, stats = fit_to_seq_len(store, seq_len=10, overlength="truncate")
    # 11 ids = 10 positions fits exactly; 12 and 30 are cut to 11 ids.
    assert fitted.lengths.tolist() == [5, 11, 11, 11]
    assert fitted[3][0].tolist() == list(range(300, 311))
    assert stats["examples_truncated"] == 2 and stats["examples_dropped_overlength"] == 0
    assert stats["examples"] == 4 and stats["tokens"] == 4 + 10 + 10 + 10
    assert stats["loss_tokens"] == stats["tokens"]


def test_overlength_drop_removes_and_counts():
    fitted, stats = fit_to_seq_len(_store([5, 11, 12, 30]), seq_len=10, overlength="drop")
    assert fitted.lengths.tolist() == [5, 11]
    assert [fitted[i][0][0] for i in range(2)] == [0, 100]
    assert stats["examples_dropped_overlength"] == 2 and stats["examples_truncated"] == 0
    assert stats["examples"] == 2 and stats["tokens"] == 14


def test_truncation_that_leaves_no_loss_tokens_drops_the_example():
    # A 12-token prompt cut to 11 ids leaves only prompt: nothing to learn, so it is dropped.
    fitted, stats = fit_to_seq_len(_store([14, 15], prompt=12), seq_len=10, overlength="truncate")
    assert len(fitted) == 0
    assert stats["examples_truncated"] == 2 and stats["examples_dropped_no_loss"] == 2


def test_overlength_counts_through_build_datasets(tok, tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", alpaca_rows(20, long_every=4))
    kwargs = dict(tokenizer=tok, train_paths=path, fmt="alpaca", seq_len=200, batch_size=2, num_epochs=1)
    truncated = build_datasets(overlength="truncate", **kwargs)
    dropped = build_datasets(overlength="drop", **kwargs)
    n_long = truncated.stats["examples_truncated"]
    assert n_long == dropped.stats["examples_dropped_overlength"] == 5
    assert truncated.stats["examples"] == 20 and dropped.stats["examples"] == 15
    rows_used = sum((b["segment_ids"] > 0).sum() for b in truncated.train)
    assert rows_used <= truncated.stats["tokens"]
    # A truncated example fills all seq_len positions of its segment.
    longest = max(np.bincount(b["segment_ids"][r])[1:].max()
                  for b in truncated.train for r in range(2))
    assert longest == 200


def test_bad_overlength_value():
    with pytest.raises(ValueError, match="overlength must be one of"):
        fit_to_seq_len(_store([3]), seq_len=4, overlength="wrap")


def test_packer_resumes_exactly_from_the_middle_of_a_packed_group():
    # The pipeline packs with as many bins as rows per batch, so its saved states usually sit
    # at group boundaries; here rows are taken one by one from a 4-bin packer to also restore
    # states that point inside a group (grain re-packs the group and skips emitted rows).
    import json

    import grain

    from codejax.data import pack_rows

    store = _store([3 + (7 * i) % 11 for i in range(30)])

    def rows():
        ds = grain.MapDataset.source(store).shuffle(seed=5).repeat(3).map(to_training_row)
        return pack_rows(ds.to_iter_dataset(grain.ReadOptions(num_threads=0)), seq_len=16,
                         pad_id=0, num_bins=4)

    reference = list(rows())
    assert all(r["inputs"].shape == (16,) for r in reference)
    mid_group_states = 0
    for n in range(0, len(reference), 3):
        it = iter(rows())
        for _ in range(n):
            next(it)
        state = json.loads(json.dumps(it.get_state()))
        mid_group_states += state["next_row"] > 0  # grain's packer state: rows already emitted
        restored = iter(rows())
        restored.set_state(state)
        rest = list(restored)
        assert len(rest) == len(reference) - n
        assert all(np.array_equal(a[k], b[k]) for a, b in zip(rest, reference[n:]) for k in ROW_KEYS)
    assert mid_group_states > 0
