"""Tests for codejax.data.sources: every file kind, provenance strings, paths and globs."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_helpers import write_jsonl

from codejax.data import DataError, read_rows, resolve_paths
from codejax.data import errors

ROWS = [{"text": f"print({i})"} for i in range(3)]


def _values(rows):
    return [(where, row["text"]) for where, row in rows]


def test_jsonl_rows_with_one_based_lines_and_blank_lines_ignored(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [ROWS[0], "", "   ", ROWS[1], ROWS[2]])
    assert _values(read_rows(path)) == [
        (f"{path}:1", "print(0)"), (f"{path}:4", "print(1)"), (f"{path}:5", "print(2)")]


def test_jsonl_bad_lines_are_yielded_as_errors_and_the_rest_still_read(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [ROWS[0], b'{"text": "caf\xe9"}', "{not json", "[1, 2]",
                                              ROWS[1]])
    rows = list(read_rows(path))
    assert [where for where, _ in rows] == [f"{path}:{i}" for i in range(1, 6)]
    kinds = [row.reason if isinstance(row, DataError) else "ok" for _, row in rows]
    assert kinds == ["ok", errors.NOT_UTF8, errors.INVALID_JSON, errors.NOT_AN_OBJECT, "ok"]
    assert str(rows[1][1]).startswith(f"{path}:2: not valid UTF-8")


def test_jsonl_utf8_bom_is_ignored(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(ROWS[0]).encode() + b"\n")
    assert _values(read_rows(str(path))) == [(f"{path}:1", "print(0)")]


def test_json_list_rows_are_zero_based(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps(ROWS))
    assert _values(read_rows(str(path))) == [(f"{path}:row {i}", f"print({i})") for i in range(3)]


def test_json_syntax_error_fails_the_whole_file_naming_the_line(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[\n{"text": "a"},\n{"text": }\n]')
    with pytest.raises(DataError, match=rf"^{path}:3: invalid JSON"):
        list(read_rows(str(path)))


def test_json_top_level_must_be_a_list(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"text": "a"}))
    with pytest.raises(DataError, match="top-level JSON list of objects, got object"):
        list(read_rows(str(path)))


def test_json_non_utf8_bytes_survive_to_the_row(tmp_path):
    # The reader keeps them as lone surrogates so the format check can name row and field.
    path = tmp_path / "a.json"
    path.write_bytes(b'[{"text": "ok"}, {"text": "caf\xe9"}]')
    rows = list(read_rows(str(path)))
    assert rows[0][1] == {"text": "ok"}
    assert rows[1][1]["text"] == "caf\udce9"


def test_parquet_rows(tmp_path):
    path = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    assert _values(read_rows(str(path))) == [(f"{path}:row {i}", f"print({i})") for i in range(3)]


def test_hf_saved_dataset_and_dataset_dict_split(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:1]),
                          "test": datasets.Dataset.from_list(ROWS[1:])}).save_to_disk(str(tmp_path / "dd"))
    ds_dir, dd_dir = str(tmp_path / "ds"), str(tmp_path / "dd")
    assert _values(read_rows(ds_dir)) == [(f"{ds_dir}:row {i}", f"print({i})") for i in range(3)]
    assert _values(read_rows(dd_dir, hf_split="test")) == [
        (f"{dd_dir}[test]:row 0", "print(1)"), (f"{dd_dir}[test]:row 1", "print(2)")]
    with pytest.raises(ValueError, match=r"split 'validation' not found; available: \['test', 'train'\]"):
        list(read_rows(dd_dir, hf_split="validation"))


def test_plain_directory_is_rejected(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="not a dataset saved with datasets' save_to_disk"):
        list(read_rows(str(tmp_path / "d")))


def test_globs_are_sorted_and_lists_keep_order(tmp_path):
    for name in ("b.jsonl", "a.jsonl", "c.json"):
        (tmp_path / name).write_text("")
    assert resolve_paths(str(tmp_path / "*.jsonl")) == [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    assert resolve_paths([str(tmp_path / "c.json"), str(tmp_path / "b*")]) == [
        str(tmp_path / "c.json"), str(tmp_path / "b.jsonl")]


def test_missing_paths_and_patterns_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        resolve_paths([str(tmp_path / "nope.jsonl")])
    with pytest.raises(FileNotFoundError, match=r"pattern .*\*\.parquet.* matches no files"):
        resolve_paths(str(tmp_path / "*.parquet"))
    with pytest.raises(ValueError, match="no data paths"):
        resolve_paths([])


def test_unsupported_file_type(tmp_path):
    (tmp_path / "a.csv").write_text("text\nx\n")
    with pytest.raises(ValueError, match=r"a\.csv: unsupported data file type"):
        list(read_rows(str(tmp_path / "a.csv")))
