"""The code data pipeline, end to end: `run_pipeline(settings, out_dir) -> summary`.

    refs ──► [workers] read ─ language ─ license ─ quality ─ decontam ─ security ─ PII ─ secrets ─ signature
                 │ (ordered results; kept records spooled to OUT/.work/cleaned.jsonl)
                 ▼
         [parent] exact dedup ─ near dedup (MinHash LSH) ─ split (by repo / package)
                 ▼
         [workers] task builders (codejax.codedata.tasks; or the file as a `text` row) ─ decontam
                 ▼
         [parent] mixing ─ curriculum ─ shards (train / eval / preference) ─ report

Per-file stages run in a `multiprocessing` pool (spawned processes, `imap` in order, in
windows so only a bounded number of files is in flight); global stages run in the parent
over keys sorted by (repo, path). Randomness comes from per-file `random.Random`s seeded
by sha256(seed, repo, path) and one seeded generator for mixing, so the output does not
depend on the number of workers and a rerun writes byte-identical shards.

Nothing kills the run for one file: a file that makes a stage raise is dropped and
counted (see `stages.py`). Settings are checked up front (`settings.py`).
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import itertools
import json
import multiprocessing
import os
import random
import shutil
import time
from collections.abc import Iterable, Iterator

from codejax.codedata import collect, decontam, dedup, mixing, output, report, splits
from codejax.codedata.settings import Settings, settings_from_config
from codejax.codedata.stages import build_file_rows, clean_file, init_worker, is_preference

__all__ = ["Settings", "run_pipeline", "settings_from_config"]


def _parallel_map(fn, items: Iterable, s: Settings, pool) -> Iterator:
    """fn over items in order: in this process (pool None) or in windows through the pool, so
    that at most a window of items (file contents, for dataset sources) is in flight."""
    if pool is None:
        yield from map(fn, items)
        return
    window = s.worker_count * s.chunksize * 16
    it = iter(items)
    while batch := list(itertools.islice(it, window)):
        yield from pool.imap(fn, batch, s.chunksize)


def _progress(items, s: Settings, desc: str, total=None):
    if not s.progress_bar:
        return items
    from tqdm import tqdm
    return tqdm(items, desc=desc, unit="file", total=total, mininterval=1.0)


def _dedup(keys: list, exact: list, signatures: list, s: Settings) -> tuple[dict[int, str], dict]:
    """Indices to drop (-> reason) and the dedup figures."""
    drop: dict[int, str] = {}
    order = sorted(range(len(keys)), key=lambda i: keys[i])
    if s.exact_dedup:
        first: dict[str, int] = {}
        for i in order:
            if exact[i] in first:
                drop[i] = "dedup/exact"
            else:
                first[exact[i]] = i
    clusters = []
    if s.near_dedup_threshold:
        alive = [i for i in order if i not in drop]
        found = dedup.near_duplicate_clusters([keys[i] for i in alive], [signatures[i] for i in alive],
                                              s.near_dedup_threshold, s.num_perm)
        clusters = [[alive[j] for j in members] for members in found]
        for members in clusters:
            for i in members[1:]:
                drop[i] = "dedup/near"
    clusters.sort(key=lambda c: (-len(c), keys[c[0]]))
    figures = {"exact_duplicates": sum(r == "dedup/exact" for r in drop.values()),
               "near_duplicates": sum(r == "dedup/near" for r in drop.values()),
               "near_clusters": len(clusters), "largest_cluster": max(map(len, clusters), default=0),
               "cluster_sizes": dict(sorted(collections.Counter(map(len, clusters)).items())),
               "threshold": s.near_dedup_threshold, "num_perm": s.num_perm, "shingle_size": s.shingle_size,
               "examples": [["/".join(keys[i]) for i in c[:5]] for c in clusters[:10]]}
    return drop, figures


def _iter_spool(path: str, keep: list[bool], splits_of: list[str]) -> Iterator[tuple[dict, str]]:
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if keep[i]:
                yield json.loads(line), splits_of[i]


@dataclasses.dataclass
class _Tally:
    """What a run counts on its way; becomes the report."""

    listed: int = 0
    bytes_read: int = 0
    dropped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    events: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    stage_s: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    wall_s: dict = dataclasses.field(default_factory=dict)
    file_bytes: list = dataclasses.field(default_factory=list)
    max_line_length: list = dataclasses.field(default_factory=list)
    task_skips: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    decontaminated: collections.Counter = dataclasses.field(default_factory=collections.Counter)


def _clean_all(refs, s: Settings, pool, spool_path: str, tally: _Tally) -> tuple[list, list, list]:
    """Phase 1: the per-file stages; kept records go to the spool. Returns (keys, exact hashes,
    signatures) of the kept records, in spool order."""
    keys, exact, signatures = [], [], []
    with open(spool_path, "w", encoding="utf-8") as spool:
        for result in _progress(_parallel_map(clean_file, refs, s, pool), s, "clean"):
            tally.listed += 1
            tally.bytes_read += result["bytes"]
            tally.events.update(result["events"])
            tally.stage_s.update(result["seconds"])
            if result.get("scores"):
                tally.file_bytes.append(result["bytes"])
                tally.max_line_length.append(result["scores"]["max_line_length"])
            if result["drop"]:
                tally.dropped[result["drop"]] += 1
                continue
            record = result["record"]
            tally.events[f"license/{record['license']}"] += 1
            tally.events[f"language/{record['language']}"] += 1
            spool.write(json.dumps(record, ensure_ascii=False) + "\n")
            keys.append((record["repo"], record["path"]))
            exact.append(result["exact"])
            signatures.append(result["signature"])
    return keys, exact, signatures


def _build_all(items, total: int, s: Settings, pool, tally: _Tally) -> dict[str, dict[str, list[dict]]]:
    """Phase 3: task rows of every kept file, as {split: {task: rows}} in spool order."""
    rows = {"train": collections.defaultdict(list), "eval": collections.defaultdict(list)}
    for result in _progress(_parallel_map(build_file_rows, items, s, pool), s, "tasks", total=total):
        for row in result["rows"]:
            rows[result["split"]][row.get("task", "text")].append(row)
        tally.task_skips.update(result["skipped"])
        tally.decontaminated.update(result["decontaminated"])
        tally.events.update(result["events"])
        tally.stage_s["tasks"] += result["seconds"]
    return rows


def _write_all(rows: dict, s: Settings, out_dir: str) -> tuple[dict, dict, dict]:
    """Phase 4: mix and order the SFT training rows, write every shard set.
    Returns ({output name: rows}, {output name: file names}, mixing stats)."""
    sft_train = {t: [r for r in rs if not is_preference(r)] for t, rs in sorted(rows["train"].items())}
    sft_train = {t: rs for t, rs in sft_train.items() if rs}
    mix_rng = random.Random(int.from_bytes(hashlib.sha256(f"{s.seed}\0mix".encode()).digest()[:8], "big"))
    train, mix_stats = mixing.mix(sft_train, s.mix_strategy, s.mix_temperature, s.weight_map, s.mix_total,
                                  mix_rng)
    # Eval rows keep their natural mix and file order: eval measures the data as it is.
    to_write = {"train": mixing.order(train, s.curriculum, s.curriculum_schedule, mix_rng),
                "eval": [r for t in sorted(rows["eval"]) for r in rows["eval"][t] if not is_preference(r)]}
    for sp in ("train", "eval"):
        prefs = [r for t in sorted(rows[sp]) for r in rows[sp][t] if is_preference(r)]
        if prefs:
            to_write[f"preference-{sp}"] = prefs
    outputs = {name: output.write_shards(rs, out_dir, name, s.output_format, s.shard_rows)
               for name, rs in to_write.items()}
    output.remove_stale_shards(out_dir, ["train", "eval", "preference-train", "preference-eval"],
                               {n for names in outputs.values() for n in names})
    return to_write, outputs, mix_stats


def run_pipeline(s: Settings, out_dir: str) -> dict:
    """Run every stage and write the shards and the report to `out_dir`; returns the summary."""
    started = time.perf_counter()
    work = os.path.join(out_dir, ".work")
    os.makedirs(work, exist_ok=True)
    tally = _Tally()
    eval_grams = decontam.eval_ngrams(s.decontam_sets, s.decontam_ngram) if s.decontaminate else None
    collect_events: collections.Counter = collections.Counter()
    refs = collect.iter_refs(s.sources, s.language_list, s.include_tests, collect_events)
    if s.max_files:
        refs = itertools.islice(refs, s.max_files)
    spool_path = os.path.join(work, "cleaned.jsonl")

    pool = None
    if s.worker_count > 1:
        pool = multiprocessing.get_context("spawn").Pool(s.worker_count, initializer=init_worker,
                                                         initargs=(s, eval_grams))
    else:
        init_worker(s, eval_grams)
    try:
        t0 = time.perf_counter()
        keys, exact, signatures = _clean_all(refs, s, pool, spool_path, tally)
        tally.events.update(collect_events)
        tally.wall_s["clean"] = time.perf_counter() - t0

        t0 = time.perf_counter()  # phase 2, in the parent: dedup, then the split of what is left
        drop, dedup_figures = _dedup(keys, exact, signatures, s)
        del exact, signatures
        tally.dropped.update(drop.values())
        keep = [i not in drop for i in range(len(keys))]
        split_of = [splits.assign_split(repo, path, s.split_by, s.eval_fraction, s.seed) for repo, path in keys]
        tally.stage_s["dedup+split (parent)"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        rows = _build_all(_iter_spool(spool_path, keep, split_of), sum(keep), s, pool, tally)
        tally.wall_s["tasks"] = time.perf_counter() - t0
    except BaseException:
        if pool is not None:  # an error or Ctrl-C in the parent: stop the workers now
            pool.terminate()
        raise
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    t0 = time.perf_counter()
    to_write, outputs, mix_stats = _write_all(rows, s, out_dir)
    tally.stage_s["mix+write (parent)"] = time.perf_counter() - t0
    shutil.rmtree(work, ignore_errors=True)
    tally.wall_s["total"] = time.perf_counter() - started

    kept = [i for i in range(len(keys)) if keep[i]]
    rep = _report(s, tally, keys, kept, split_of, rows, to_write, outputs, mix_stats, dedup_figures)
    plots = report.write_report(rep, out_dir, plots=s.plots)
    return {"out_dir": out_dir, "files_listed": tally.listed, "files_kept": len(kept), "rows": rep["rows"],
            "outputs": outputs, "dropped": rep["dropped"], "plots": plots, "timing": rep["timing"]}


def _report(s: Settings, tally: _Tally, keys, kept, split_of, rows, to_write, outputs, mix_stats,
            dedup_figures) -> dict:
    groups = {sp: {splits.split_key(*keys[i], s.split_by) for i in kept if split_of[i] == sp}
              for sp in ("train", "eval")}
    built = collections.Counter({t: len(rs) for t, rs in rows["train"].items()})
    built.update({t: len(rs) for t, rs in rows["eval"].items()})
    wall = tally.wall_s["total"]
    curriculum = s.curriculum if s.curriculum != "none" else "complexity"
    return {
        "config": dataclasses.asdict(s)
                  | {"max_line_length": s.quality_thresholds.max_line_length},
        "funnel": report.funnel(tally.listed, tally.dropped),
        "bytes_read": tally.bytes_read,
        "files_kept": len(kept),
        "dropped": dict(sorted(tally.dropped.items())),
        "events": dict(sorted(tally.events.items())),
        "dedup": dedup_figures,
        "split": {"split_by": s.split_by, "eval_fraction": s.eval_fraction,
                  "train_files": sum(split_of[i] == "train" for i in kept),
                  "eval_files": sum(split_of[i] == "eval" for i in kept),
                  "train_groups": len(groups["train"]), "eval_groups": len(groups["eval"])},
        "tasks": {"names": list(s.task_list), "rows_by_task": dict(sorted(built.items())),
                  "eval_rows_by_task": {t: len(rs) for t, rs in sorted(rows["eval"].items())},
                  "skipped_by_reason": dict(sorted(tally.task_skips.items())),
                  "decontaminated_rows": dict(sorted(tally.decontaminated.items()))},
        "mixing": {"strategy": s.mix_strategy, "temperature": s.mix_temperature, "total": len(to_write["train"]),
                   "curriculum": s.curriculum, "schedule": s.curriculum_schedule, "tasks": mix_stats},
        "rows": {name: len(rs) for name, rs in to_write.items()},
        "outputs": outputs,
        "histograms": {"file_bytes": report.histogram(tally.file_bytes, log=True),
                       "max_line_length": report.histogram(tally.max_line_length, log=True),
                       "difficulty": report.histogram([mixing.difficulty(r, curriculum) for r in to_write["train"]])},
        "timing": {"wall_s": round(wall, 2), "clean_wall_s": round(tally.wall_s["clean"], 2),
                   "tasks_wall_s": round(tally.wall_s["tasks"], 2), "workers": s.worker_count,
                   "files_per_s": round(tally.listed / wall, 2) if wall else 0.0,
                   "mb_per_s": round(tally.bytes_read / 1e6 / wall, 3) if wall else 0.0,
                   "stage_cpu_s": {k: round(v, 2) for k, v in sorted(tally.stage_s.items())}},
    }

