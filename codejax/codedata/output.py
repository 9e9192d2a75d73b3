"""Sharded output: `<name>-00000-of-0000N.jsonl` (or `.parquet`), written atomically.

Every file is written to a temporary name and renamed into place, and shards of an
earlier run that this run did not rewrite (a different shard count, another format) are
removed afterwards, so a workdir never mixes two runs' shards and a crash never leaves a
half-written one. `codejax.data` reads either format directly (`data.train_paths=
OUT/train-*.jsonl`).
"""
from __future__ import annotations

import glob
import json
import os

FORMATS = ("jsonl", "parquet")


def shard_names(name: str, rows: int, shard_rows: int, fmt: str) -> list[str]:
    count = max(1, -(-rows // shard_rows))
    return [f"{name}-{i:05d}-of-{count:05d}.{fmt}" for i in range(count)]


def _write_jsonl(rows: list[dict], path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")


def _write_parquet(rows: list[dict], path: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Columns in first-seen order, every row filled out with nulls: from_pylist would take
    # the columns of the first row only and silently drop the others.
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    table = pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows]) if rows else pa.table({})
    pq.write_table(table, path)


def write_shards(rows: list[dict], out_dir: str, name: str, fmt: str, shard_rows: int) -> list[str]:
    """Write `rows` in order as shards of at most `shard_rows`; returns the file names."""
    if fmt not in FORMATS:
        raise ValueError(f"data_pipeline.output_format={fmt!r}; expected one of {FORMATS}")
    if shard_rows < 1:
        raise ValueError(f"data_pipeline.shard_rows must be >= 1, got {shard_rows}")
    names = shard_names(name, len(rows), shard_rows, fmt)
    for i, file_name in enumerate(names):
        path = os.path.join(out_dir, file_name)
        tmp = path + ".tmp"
        (_write_jsonl if fmt == "jsonl" else _write_parquet)(rows[i * shard_rows:(i + 1) * shard_rows], tmp)
        os.replace(tmp, path)
    return names


def remove_stale_shards(out_dir: str, names: list[str], written: set[str]) -> list[str]:
    """Delete `<name>-*-of-*.{jsonl,parquet}` files of the given names not in `written`."""
    removed = []
    for name in names:
        for fmt in FORMATS:
            for path in sorted(glob.glob(os.path.join(glob.escape(out_dir), f"{name}-*-of-*.{fmt}"))):
                if os.path.basename(path) not in written:
                    os.remove(path)
                    removed.append(os.path.basename(path))
    return removed
