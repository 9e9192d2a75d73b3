"""End-to-end tests of build_datasets: sources, bad rows, shuffling, exact resume, eval split."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_helpers import alpaca_rows, text_rows, write_jsonl

from codejax.data import ROW_KEYS, DataError, build_datasets

SEQ_LEN = 64


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def _same(batches_a, batches_b):
    return len(batches_a) == len(batches_b) and all(
        np.array_equal(a[k], b[k]) for a, b in zip(batches_a, batches_b) for k in ROW_KEYS)


def _first_tokens(batches):
    """With pack=False and batch_size=1, the first input token identifies the example."""
    return [int(b["inputs"][0, 0]) for b in batches]


def _text_data(tok, path, **kwargs):
    kwargs = {"seq_len": SEQ_LEN, "batch_size": 1, "pack": False, **kwargs}
    return build_datasets(tokenizer=tok, train_paths=path, fmt="text", **kwargs)


@pytest.fixture(scope="module")
def numbered_texts(tmp_path_factory):
    """12 documents whose first tokens differ (the letters a..l), to track example order."""
    rows = [{"text": f"{chr(ord('a') + i)} = 1\n"} for i in range(12)]
    return write_jsonl(tmp_path_factory.mktemp("num") / "t.jsonl", rows)


# ---------------------------------------------------------------------------- sources


def _write_all_kinds(tmp_path, rows):
    import datasets

    paths = {"jsonl": write_jsonl(tmp_path / "a.jsonl", rows), "json": str(tmp_path / "a.json"),
             "parquet": str(tmp_path / "a.parquet"), "hf": str(tmp_path / "hf")}
    (tmp_path / "a.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), paths["parquet"])
    datasets.Dataset.from_list(rows).save_to_disk(paths["hf"])
    return paths


def test_every_source_kind_gives_the_same_batches(tok, tmp_path):
    paths = _write_all_kinds(tmp_path, alpaca_rows(10))
    results = {kind: build_datasets(tokenizer=tok, train_paths=p, fmt="alpaca", seq_len=256,
                                    batch_size=2, num_epochs=1, seed=3)
               for kind, p in paths.items()}
    reference = list(results["jsonl"].train)
    assert len(reference) >= 2
    for kind, data in results.items():
        assert data.stats["rows_read"] == 10 and data.stats["examples"] == 10, kind
        assert _same(list(data.train), reference), kind


def test_lists_and_globs_of_paths_are_concatenated(tok, tmp_path):
    write_jsonl(tmp_path / "a.jsonl", text_rows(5))
    write_jsonl(tmp_path / "b.jsonl", text_rows(7))
    data = _text_data(tok, [str(tmp_path / "*.jsonl"), str(tmp_path / "a.jsonl")], num_epochs=1)
    assert data.stats["rows_read"] == 17 and len(list(data.train)) == 17


# ---------------------------------------------------------------------------- bad rows

GOOD = {"instruction": "Say hi.", "input": "", "output": "print('hi')"}

BAD_LINES = [  # (format, line 3 of the file, field named in the error or None, reason)
    ("alpaca", {"instruction": "a", "input": "", "output": 7}, "output", "wrong_type"),
    ("alpaca", {"instruction": "a", "input": ""}, "output", "missing_field"),
    ("alpaca", {"instruction": "a", "input": "", "output": ""}, "output", "empty_field"),
    ("alpaca", '{"instruction": "a", "output": ', None, "invalid_json"),
    ("alpaca", b'{"instruction": "a", "input": "", "output": "caf\xe9"}', None, "not_utf8"),
    ("alpaca", "[1, 2, 3]", None, "not_an_object"),
    ("prompt_completion", {"prompt": "a", "completion": ""}, "completion", "empty_field"),
    ("chat", {"messages": {"role": "user"}}, "messages", "wrong_type"),
    ("chat", {"messages": [{"role": "admin", "content": "x"}]}, "messages[0].role", "bad_role"),
    ("chat", {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]},
     "messages[1].content", "empty_field"),
]

GOOD_BY_FORMAT = {
    "alpaca": GOOD,
    "prompt_completion": {"prompt": "Say hi.", "completion": "print('hi')"},
    "chat": {"messages": [{"role": "user", "content": "Say hi."},
                          {"role": "assistant", "content": "print('hi')"}]},
}


@pytest.mark.parametrize("fmt, bad, field, reason", BAD_LINES)
def test_bad_row_raises_naming_file_line_and_field_or_is_skipped_and_counted(
        tok, tmp_path, fmt, bad, field, reason):
    good = GOOD_BY_FORMAT[fmt]
    path = write_jsonl(tmp_path / "train.jsonl", [good, good, bad, good])
    kwargs = dict(tokenizer=tok, train_paths=path, fmt=fmt, seq_len=256, batch_size=1)
    with pytest.raises(DataError) as info:
        build_datasets(**kwargs)
    prefix = f"{path}:3: " if field is None else f"{path}:3: field '{field}': "
    assert str(info.value).startswith(prefix) and info.value.reason == reason
    data = build_datasets(skip_bad_rows=True, **kwargs)
    assert data.stats["rows_read"] == 4 and data.stats["examples"] == 3
    assert data.stats["rows_skipped"] == 1 and data.stats[f"rows_skipped/{reason}"] == 1


def test_error_message_format_matches_the_documented_example(tok, tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [GOOD, GOOD, dict(GOOD, output=3)])
    with pytest.raises(DataError, match="^" + f"{path}:3: field 'output': expected a non-empty "
                       "string, got int" + "$"):
        build_datasets(tokenizer=tok, train_paths=path, fmt="alpaca", seq_len=256, batch_size=1)


def test_rows_of_another_format_name_the_format_to_use_and_an_empty_file_says_so(tok, tmp_path):
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    path = write_jsonl(tmp_path / "chat.jsonl", [chat])
    with pytest.raises(DataError, match=r"chat\.jsonl:1: field 'instruction': missing \(data\.format='alpaca', "
                       r"but the row has 'messages': use data\.format=chat\)$"):
        build_datasets(tokenizer=tok, train_paths=path, fmt="alpaca", seq_len=256, batch_size=1)
    with pytest.raises(DataError, match=r"field 'messages': missing \(.*'instruction': use data\.format=alpaca\)"):
        build_datasets(tokenizer=tok, train_paths=write_jsonl(tmp_path / "a.jsonl", [GOOD]), fmt="chat",
                       seq_len=256, batch_size=1)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match=r"empty\.jsonl: empty file"):
        build_datasets(tokenizer=tok, train_paths=str(tmp_path / "empty.jsonl"), fmt="alpaca", seq_len=256,
                       batch_size=1)


def test_many_kinds_of_bad_rows_are_counted_per_reason(tok, tmp_path):
    lines = [GOOD, {"instruction": "a", "output": 1}, "{oops", b'{"output": "\xff"}', GOOD,
             {"instruction": "a", "input": "", "output": ""}, {"instruction": "b", "output": 2}]
    json_path = tmp_path / "more.json"  # a .json list: bad bytes are caught per row and field
    json_path.write_bytes(b'[{"instruction": "a", "input": "", "output": "ok\xff"}, '
                          + json.dumps(GOOD).encode() + b"]")
    data = build_datasets(tokenizer=tok, train_paths=[write_jsonl(tmp_path / "t.jsonl", lines),
                                                      str(json_path)],
                          fmt="alpaca", seq_len=256, batch_size=1, skip_bad_rows=True)
    s = data.stats
    assert s["rows_read"] == 9 and s["examples"] == 3 and s["rows_skipped"] == 6
    assert (s["rows_skipped/wrong_type"], s["rows_skipped/invalid_json"], s["rows_skipped/not_utf8"],
            s["rows_skipped/empty_field"]) == (2, 1, 2, 1)
    with pytest.raises(DataError, match=rf"{json_path}:row 0: field 'output': .*not valid UTF-8"):
        build_datasets(tokenizer=tok, train_paths=str(json_path), fmt="alpaca", seq_len=256,
                       batch_size=1)


# ---------------------------------------------------------------------------- config errors


@pytest.mark.parametrize("kwargs, error, match", [
    ({"fmt": "sharegpt"}, ValueError, "unknown data format 'sharegpt'"),
    ({"overlength": "wrap"}, ValueError, "overlength must be one of"),
    ({"seq_len": 1}, ValueError, "seq_len must be >= 2"),
    ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
    ({"eval_fraction": 1.0}, ValueError, r"eval_fraction must be in \[0, 1\)"),
    ({"num_epochs": 0}, ValueError, "num_epochs must be >= 1"),
    ({"train_paths": "/no/such/file.jsonl"}, FileNotFoundError, "/no/such/file.jsonl"),
])
def test_bad_config_values_fail_clearly(tok, numbered_texts, kwargs, error, match):
    base = dict(tokenizer=tok, train_paths=numbered_texts, fmt="text", seq_len=SEQ_LEN, batch_size=1)
    with pytest.raises(error, match=match):
        build_datasets(**{**base, **kwargs})


def test_eval_paths_and_eval_fraction_are_exclusive(tok, numbered_texts):
    with pytest.raises(ValueError, match="either eval_paths or eval_fraction"):
        _text_data(tok, numbered_texts, eval_paths=numbered_texts, eval_fraction=0.1)


def test_stats_have_every_documented_key(tok, numbered_texts):
    stats = _text_data(tok, numbered_texts, eval_fraction=0.25).stats
    per_split = ["examples", "examples_truncated", "examples_dropped_overlength",
                 "examples_dropped_no_loss", "tokens", "loss_tokens", "longest_example", "seq_len_p99"]
    assert set(stats) == {"rows_read", "rows_skipped", *per_split, *(f"eval_{k}" for k in per_split)}
    assert all(isinstance(v, int) for v in stats.values())
    assert stats["examples"] + stats["eval_examples"] == stats["rows_read"] == 12
    assert stats["tokens"] == stats["loss_tokens"] > 0  # text: every target is weighted


# ---------------------------------------------------------------------------- shuffling


def test_shuffle_is_deterministic_by_seed_and_reshuffles_each_epoch(tok, numbered_texts):
    def order(seed, epochs=1):
        return _first_tokens(list(_text_data(tok, numbered_texts, seed=seed, num_epochs=epochs).train))

    assert order(0) == order(0)
    assert order(0) != order(1)
    two = order(0, epochs=2)
    assert sorted(two[:12]) == sorted(two[12:]) == sorted(order(0))  # each epoch: every example once
    assert two[:12] == order(0) and two[12:] != two[:12]
    unshuffled = _first_tokens(list(_text_data(tok, numbered_texts, shuffle=False, num_epochs=1).train))
    assert unshuffled == sorted(unshuffled)  # file order ('a', 'b', ... tokenize in order)


# ---------------------------------------------------------------------------- exact resume


def _find(state, key):
    """All values of ``key`` anywhere in a nested state dict."""
    found = []
    if isinstance(state, dict):
        for k, v in state.items():
            found += [v] if k == key else _find(v, key)
    return found


@pytest.mark.parametrize("pack", [True, False])
def test_resume_from_saved_state_is_exact_including_across_epochs(tok, tmp_path, pack):
    path = write_jsonl(tmp_path / "t.jsonl", text_rows(15))

    def build():
        return _text_data(tok, path, batch_size=3, pack=pack, seed=7, num_epochs=None)

    reference = _take(iter(build().train), 40)  # several epochs
    for n in (1, 4, 5, 6, 11, 17, 23):
        it = iter(build().train)
        _take(it, n)
        state = json.loads(json.dumps(it.get_state()))
        restored = iter(build().train)
        restored.set_state(state)
        assert _same(_take(restored, 40 - n), reference[n:]), n
        assert _same(_take(it, 3), reference[n:n + 3])  # saving state did not disturb the original
    assert max(_find(state, "next_index")) > 15  # the last restore point was past epoch one


def test_resume_near_the_end_of_finite_epochs(tok, numbered_texts):
    data = _text_data(tok, numbered_texts, batch_size=5, num_epochs=2)
    full = list(data.train)
    assert len(full) == 4  # 24 rows // 5, the partial batch dropped
    it = iter(data.train)
    _take(it, 3)
    restored = iter(_text_data(tok, numbered_texts, batch_size=5, num_epochs=2).train)
    restored.set_state(json.loads(json.dumps(it.get_state())))
    assert _same(list(restored), full[3:])


def test_state_from_a_different_pipeline_is_refused(tok, numbered_texts):
    it = iter(_text_data(tok, numbered_texts, seed=0).train)
    next(it)
    other = iter(_text_data(tok, numbered_texts, seed=1).train)
    with pytest.raises(ValueError, match="different data or config"):
        other.set_state(it.get_state())


# ---------------------------------------------------------------------------- eval split


def _all_example_ids(batches):
    rows = []
    for b in batches:
        for r in range(b["inputs"].shape[0]):
            n = int((b["segment_ids"][r] > 0).sum())
            if n:
                rows.append(tuple(b["inputs"][r, :n]) + (int(b["targets"][r, n - 1]),))
    return rows


def test_eval_fraction_holds_out_a_disjoint_seeded_subset(tok, tmp_path):
    rows = text_rows(40)
    path = write_jsonl(tmp_path / "t.jsonl", rows + rows[:5])  # 5 duplicated rows

    def split(seed):
        data = _text_data(tok, path, eval_fraction=0.2, seed=seed, num_epochs=1, eval_batch_size=4)
        return _all_example_ids(data.train), _all_example_ids(data.eval()), data.stats

    train, held_out, stats = split(0)
    assert len(train) + len(held_out) == 45 and stats["eval_examples"] == len(held_out) == 9
    assert not set(train) & set(held_out)  # duplicates never straddle the split
    assert split(0)[1] == held_out
    assert set(split(1)[1]) != set(held_out)


def test_separate_eval_source(tok, tmp_path, numbered_texts):
    eval_path = write_jsonl(tmp_path / "eval.jsonl", text_rows(3))
    data = _text_data(tok, numbered_texts, eval_paths=eval_path, eval_batch_size=2)
    assert data.stats["rows_read"] == 15 and data.stats["eval_examples"] == 3
    batches = list(data.eval())
    assert len(batches) == 2 and len(_all_example_ids(batches)) == 3
