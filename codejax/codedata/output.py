"""Sharded output: `<name>-00000-of-0000N.jsonl` (or `.parquet`), written atomically.

Every file is written to a temporary name and renamed into place. The data job builds its
whole output set (shards, report, plots, summary, config.json) in `WORKDIR/.staging` and
then swaps it in (`swap_in`): shards of an earlier run that this set does not have (a
different shard count, another format) are removed, and a kill mid-swap is rolled forward
by the next run (`finish_swap`), so a workdir never mixes two runs' outputs and a crash
never leaves a half-written file. `codejax.data` reads either format directly (`data.train_paths=
OUT/train-*.jsonl`).
"""
from __future__ import annotations

import glob
import json
import os
import shutil

from codejax.train.workdir import write_text

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


# ----------------------------------------------------------------------------- staging

STAGING = ".staging"  # a run's complete output set is built here, then swapped into the workdir
SWAP_MARKER = ".swap.json"  # present while a swap is under way: the files to move, in order
SHARD_NAMES = ("train", "eval", "preference-train", "preference-eval")
# Moved last, config.json very last: a workdir whose config.json names these settings holds their outputs.
LAST = ("report.json", "report.md", "summary.json", "config.json")


def staging_dir(out_dir: str) -> str:
    """A fresh, empty staging folder (what a killed run left there is half-built: dropped)."""
    path = os.path.join(out_dir, STAGING)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def swap_in(out_dir: str) -> list[str]:
    """Move the complete output set in `out_dir/.staging` into `out_dir`; returns the moved paths.

    The list of files is written to `.swap.json` first (atomically), so that a kill mid-swap is
    rolled forward by `finish_swap` on the next run, never left as a mix of two runs: earlier
    shards and plots this set does not have are removed, the shards and plots move in, then the
    report, the summary and config.json."""
    staging = os.path.join(out_dir, STAGING)
    files = sorted(os.path.relpath(os.path.join(d, f), staging) for d, _, fs in os.walk(staging) for f in fs)
    files = [f for f in files if f not in LAST] + [f for f in LAST if f in files]
    write_text(os.path.join(out_dir, SWAP_MARKER), json.dumps(files))
    return finish_swap(out_dir)


def finish_swap(out_dir: str) -> list[str]:
    """Complete a swap that `.swap.json` says is under way (no-op without one)."""
    marker = os.path.join(out_dir, SWAP_MARKER)
    if not os.path.exists(marker):
        return []
    with open(marker, encoding="utf-8") as f:
        files = json.load(f)
    staging = os.path.join(out_dir, STAGING)
    keep = set(files)
    remove_stale_shards(out_dir, list(SHARD_NAMES), {f for f in keep if "/" not in f})
    for old in glob.glob(os.path.join(glob.escape(out_dir), "plots", "*.png")):
        if os.path.relpath(old, out_dir) not in keep:
            os.remove(old)
    for rel in files:
        source = os.path.join(staging, rel)
        if os.path.exists(source):  # else moved before the kill
            os.makedirs(os.path.dirname(os.path.join(out_dir, rel)), exist_ok=True)
            os.replace(source, os.path.join(out_dir, rel))
    os.remove(marker)
    shutil.rmtree(staging, ignore_errors=True)
    return files

