"""Read rows (JSON-like dicts) from local files, each tagged with where it came from.

Supported inputs, chosen by path:

* ``*.jsonl`` / ``*.ndjson``: one JSON object per line. Provenance ``"<path>:<line>"``,
  1-based like an editor. Lines are decoded one at a time, so a line with bytes that are not
  UTF-8, or with invalid JSON, is one bad row and the rest of the file is still usable.
  Blank lines are not rows and are ignored.
* ``*.json``: a top-level list of objects. Provenance ``"<path>:row <i>"``, 0-based. The file
  is parsed in one go, so a syntax error fails the whole file; bytes that are not UTF-8 are
  carried through as lone surrogates and reported per row (and field) by the format checks.
* ``*.parquet``: read with pyarrow in record batches. Provenance ``"<path>:row <i>"``, 0-based.
* a directory written by ``datasets.Dataset.save_to_disk`` (or ``DatasetDict``, from which
  ``hf_split`` is taken). Provenance ``"<path>:row <i>"`` (``"<path>[<split>]:row <i>"``).

``paths`` may mix these, and may hold glob patterns (expanded and sorted, so row order does
not depend on the filesystem). A path or pattern that matches nothing is an error naming it.

Readers *yield* per-row problems as :class:`DataError` values instead of raising them, so the
caller's skip policy decides; problems that make the whole file unreadable (a ``.json``
syntax error, a corrupt parquet file) are raised, since skipping them would drop an unknown
number of rows.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator, Sequence

from codejax.data import errors
from codejax.data.errors import DataError

# A row is (provenance, the decoded object or the reason it could not be decoded).
Row = tuple[str, "dict | DataError"]

JSONL_SUFFIXES = (".jsonl", ".ndjson")
_GLOB_CHARS = frozenset("*?[")
_UTF8_BOM = b"\xef\xbb\xbf"
_PARQUET_BATCH_ROWS = 1024


def split_paths(spec: str) -> list[str]:
    """A config's comma-separated path list ('a.jsonl, b/*.jsonl') -> ['a.jsonl', 'b/*.jsonl']."""
    return [p.strip() for p in spec.split(",") if p.strip()]


def resolve_paths(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Expand ``paths`` (one path, or a list of paths and glob patterns) into existing paths."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise ValueError("no data paths given")
    resolved = []
    for p in map(os.fspath, paths):
        if _GLOB_CHARS & set(p):
            matches = sorted(glob.glob(p))
            if not matches:
                raise FileNotFoundError(f"data path pattern {p!r} matches no files")
            resolved.extend(matches)
        elif os.path.exists(p):
            resolved.append(p)
        else:
            raise FileNotFoundError(f"data path {p!r} does not exist")
    return resolved


def read_rows(paths, hf_split: str = "train") -> Iterator[Row]:
    """All rows of all ``paths``, in order. See the module docstring for the formats."""
    for path in resolve_paths(paths):
        yield from iter_file_rows(path, hf_split=hf_split)


def iter_file_rows(path: str, hf_split: str = "train") -> Iterator[Row]:
    """Dispatch on the kind of ``path``; unknown kinds are a ValueError naming the path."""
    if os.path.isdir(path):
        return iter_hf_disk_rows(path, hf_split)
    lower = path.lower()
    if lower.endswith(JSONL_SUFFIXES):
        return iter_jsonl_rows(path)
    if lower.endswith(".json"):
        return iter_json_rows(path)
    if lower.endswith(".parquet"):
        return iter_parquet_rows(path)
    raise ValueError(f"{path}: unsupported data file type; expected .jsonl, .json, .parquet "
                     "or a directory saved with datasets' save_to_disk")


def _object_or_error(value: object, where: str) -> dict | DataError:
    if isinstance(value, dict):
        return value
    return DataError(where, None, f"expected a JSON object, got {errors.json_type_name(value)}",
                     errors.NOT_AN_OBJECT)


def iter_jsonl_rows(path: str) -> Iterator[Row]:
    """One row per non-blank line; bad bytes or bad JSON spoil only their own line."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            if lineno == 1 and raw.startswith(_UTF8_BOM):
                raw = raw[len(_UTF8_BOM):]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield where, DataError(where, None, f"not valid UTF-8 ({e.reason} at byte "
                                       f"{e.start} of the line)", errors.NOT_UTF8)
                continue
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                yield where, DataError(where, None, f"invalid JSON: {e.msg} (column {e.colno})",
                                       errors.INVALID_JSON)
                continue
            yield where, _object_or_error(value, where)


def iter_json_rows(path: str) -> Iterator[Row]:
    """Rows of a top-level JSON list; a syntax error or a non-list raises for the whole file."""
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM):]
    # surrogateescape keeps undecodable bytes as lone surrogates, which the format checks
    # report against the row and field that contain them (see formats.require_string).
    text = data.decode("utf-8", errors="surrogateescape")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}", None, f"invalid JSON: {e.msg} (column {e.colno})",
                        errors.INVALID_JSON) from None
    if not isinstance(value, list):
        raise DataError(path, None, "expected a top-level JSON list of objects, got "
                        f"{errors.json_type_name(value)}", errors.NOT_AN_OBJECT)
    for i, item in enumerate(value):
        where = f"{path}:row {i}"
        yield where, _object_or_error(item, where)


def iter_parquet_rows(path: str) -> Iterator[Row]:
    """Rows of a parquet file, streamed in record batches to bound memory."""
    import pyarrow.parquet as pq  # Lazy: only parquet users pay for the import.

    try:
        parquet_file = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for corrupt files.
        raise ValueError(f"{path}: cannot read parquet file: {e}") from e
    i = 0
    for batch in parquet_file.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
        for row in batch.to_pylist():
            yield f"{path}:row {i}", row
            i += 1


def iter_hf_disk_rows(path: str, split: str = "train") -> Iterator[Row]:
    """Rows of a ``save_to_disk`` directory; ``split`` picks from a ``DatasetDict``."""
    is_dict = os.path.exists(os.path.join(path, "dataset_dict.json"))
    if not is_dict and not os.path.exists(os.path.join(path, "state.json")):
        raise ValueError(f"{path}: directory is not a dataset saved with datasets' save_to_disk "
                         "(no state.json or dataset_dict.json)")
    import datasets  # Lazy: a heavy import that only HF-dataset users need.

    ds = datasets.load_from_disk(path)
    prefix = path
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise ValueError(f"{path}: split {split!r} not found; available: {sorted(ds)}")
        ds, prefix = ds[split], f"{path}[{split}]"
    for i, row in enumerate(ds):
        yield f"{prefix}:row {i}", row
