"""The synthetic-data engine: seeds and snippets -> generators -> quality control -> shards and a report.

    summary = run_synth(config, workdir)   # what job `synth` runs (codejax/jobs/synth.py)

Outputs (built in WORKDIR/.staging and swapped in as one set, like the `data` job's):
`train-0000i-of-0000N.jsonl` (Alpaca rows, or chats with synth.output_format=chat, that
configs/sft.py reads with data.format=alpaca|chat; each row also carries `id`, `method` and
`tests`), `rejected.jsonl` (every dropped item with its stage and reason), `review.jsonl` /
`review.csv` (codejax/synth/review.py), `report.json`, `report.md`, `plots/*.png`,
`summary.json`, `config.json`. The teacher's completions stay in WORKDIR/cache, which a rerun reads.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import time

from tqdm.auto import tqdm

from codejax.codedata.output import finish_swap, staging_dir, swap_in, write_shards
from codejax.evaluation.benchmarks import read_jsonl
from codejax.synth.backends import BACKENDS, CachedBackend, TokenBudget, make_backend
from codejax.synth.methods import (DIVERSIFY_OPS, EVOL_OPS, GENERATORS, SEEDS_PATH, Context, Item, MethodStats,
                                   Prompts, run_generators)
from codejax.synth.parse import parses
from codejax.synth.quality import SEVERITIES, STAGES, QCEnv, answer_text, run_quality
from codejax.synth.report import write_report
from codejax.synth.review import export_review, read_review
from codejax.synth.verify import VerifySettings
from codejax.train.workdir import write_config, write_json

log = logging.getLogger(__name__)
OUTPUT_FORMATS = ("alpaca", "chat")
CODE_FIELDS = ("code", "content", "solution", "text", "output")


def parse_methods(spec: str) -> list[str]:
    methods = [m.strip() for m in spec.split(",") if m.strip()]
    unknown = [m for m in methods if m not in GENERATORS]
    if not methods or unknown or len(set(methods)) != len(methods):
        raise ValueError(f"synth.methods={spec!r}: name each of {', '.join(GENERATORS)} at most once "
                         f"(unknown: {unknown})" if unknown or not methods else
                         f"synth.methods={spec!r} names a method twice")
    return methods


def check_synth_config(sc) -> list[str]:
    """Fail fast, naming the field, before any model is loaded; returns the methods."""
    methods = parse_methods(sc.methods)
    if sc.backend not in BACKENDS:
        raise ValueError(f"synth.backend={sc.backend!r}; expected one of {sorted(BACKENDS)}")
    for field in ("items_per_method", "max_new_tokens", "batch_size", "max_concurrency", "shard_rows"):
        if getattr(sc, field) < 1:
            raise ValueError(f"synth.{field}={getattr(sc, field)}; must be >= 1")
    for field in ("novelty_threshold", "roundtrip_threshold", "dedup_threshold", "min_kill_fraction",
                  "min_prose_fraction"):
        if not 0 <= getattr(sc, field) <= 1:
            raise ValueError(f"synth.{field}={getattr(sc, field)}; must be in [0, 1]")
    if sc.output_format not in OUTPUT_FORMATS:
        raise ValueError(f"synth.output_format={sc.output_format!r}; expected one of {OUTPUT_FORMATS}")
    if sc.security_drop not in ("",) + SEVERITIES:
        raise ValueError(f"synth.security_drop={sc.security_drop!r}; expected '' (off) or one of {SEVERITIES}")
    for field, known in (("evol_ops", EVOL_OPS), ("diversify_ops", DIVERSIFY_OPS)):
        bad = [o for o in getattr(sc, field).split(",") if o.strip() and o.strip() not in known]
        if bad:
            raise ValueError(f"synth.{field} has unknown operations {bad}; known: {', '.join(known)}")
    if sc.temperature < 0 or not 0 < sc.top_p <= 1 or sc.sandbox_timeout_s <= 0 or sc.max_total_tokens < 0:
        raise ValueError("synth.temperature must be >= 0, synth.top_p in (0, 1], synth.sandbox_timeout_s > 0 and "
                         "synth.max_total_tokens >= 0")
    return methods


# ----------------------------------------------------------------------------- inputs


def load_seeds(path: str) -> list[dict]:
    """Seed tasks: JSONL rows {instruction, solution?, tests?} (codejax/synth/seeds.jsonl by default)."""
    path = path or SEEDS_PATH
    if not os.path.isfile(path):
        raise FileNotFoundError(f"synth.seed_path={path!r} does not exist")
    seeds = []
    for n, row in read_jsonl(path):
        for field in ("instruction", "solution", "tests"):
            if field in row and not isinstance(row[field], str):
                raise ValueError(f"{path}:{n}: field {field!r} must be a string, got {type(row[field]).__name__}")
        if not str(row.get("instruction", "")).strip():
            raise ValueError(f"{path}:{n}: field 'instruction' is missing or empty")
        if row.get("solution") and not parses(row["solution"]):
            raise ValueError(f"{path}:{n}: field 'solution' is not valid Python")
        seeds.append({"instruction": row["instruction"].strip(), "solution": row.get("solution", ""),
                      "tests": row.get("tests", "")})
    if not seeds:
        raise ValueError(f"synth.seed_path={path!r} has no rows")
    return seeds


def load_snippets(spec: str, limit: int, max_chars: int) -> tuple[list[str], dict]:
    """Code snippets for OSS-Instruct and backtranslation, and counts of what was skipped.

    `spec`: comma-separated JSONL files or globs (the `data` job's train-*.jsonl, a Stack-style dump),
    read for the first of the fields code, content, solution, text, output that parses as Python
    ('' = module-level functions mined from the stdlib)."""
    skipped = {"no_code": 0, "too_long": 0}
    out: list[str] = []
    if not spec:
        from codejax.codedata import mine_tree

        rows, _ = mine_tree(max_files=max(20, limit))
        candidates = [r["input"] + "\n" + r["output"] for r in rows if r.get("qualname") == r.get("name")]
    else:
        paths = []
        for part in (p.strip() for p in spec.split(",") if p.strip()):
            found = sorted(glob.glob(part))
            if not found:
                raise FileNotFoundError(f"synth.snippets_path: {part!r} matches no file")
            paths += found
        candidates = []
        for path in paths:
            for _, row in read_jsonl(path):
                code = next((row[f] for f in CODE_FIELDS if isinstance(row.get(f), str) and parses(row[f])), None)
                if code is None:
                    skipped["no_code"] += 1
                else:
                    candidates.append(code)
    for code in candidates:
        if len(code) > max_chars:
            skipped["too_long"] += 1
        elif parses(code) and len(out) < limit:
            out.append(code.strip("\n"))
    return out, skipped


# ----------------------------------------------------------------------------- the run


def training_row(item: Item, fmt: str) -> dict:
    answer = answer_text(item)
    meta = {"id": item.id, "method": item.method, "tests": item.tests}
    if fmt == "chat":
        return {"messages": [{"role": "user", "content": item.instruction},
                             {"role": "assistant", "content": answer}], **meta}
    return {"instruction": item.instruction, "input": "", "output": answer, **meta}


def _item_record(item: Item) -> dict:
    return {"id": item.id, "method": item.method, "instruction": item.instruction, "solution": item.solution,
            "tests": item.tests, "origin": item.origin, "finish_reason": item.finish_reason}


def run_synth(config, workdir: str, progress: bool | None = None) -> dict:
    start = time.monotonic()
    sc = config.synth
    methods = check_synth_config(sc)
    if sc.backend == "local" and not sc.model_path and not config.model.hf_path and config.model.preset != "tiny":
        raise ValueError("synth.backend=local has no teacher: set synth.model_path (an HF model directory or a "
                         "training workdir); only the :tiny variant samples from a random model")
    prompts = Prompts(sc.prompts_dir)
    seeds = load_seeds(sc.seed_path)
    review = read_review(sc.review_path) if sc.review_path else None
    os.makedirs(workdir, exist_ok=True)
    finish_swap(workdir)
    snippet_info: dict = {}

    def snippets() -> list[str]:
        if "rows" not in snippet_info:
            snippet_info["rows"], snippet_info["skipped"] = load_snippets(sc.snippets_path, sc.max_snippets,
                                                                          sc.max_snippet_chars)
        return snippet_info["rows"]

    backend = CachedBackend(make_backend(config), os.path.join(workdir, "cache", "generations.jsonl"),
                            TokenBudget(sc.max_total_tokens))
    progress = config.train.progress_bar if progress is None else progress
    bars: dict[str, tqdm] = {}
    ctx = Context(backend, prompts, seeds, snippets, sc, config.seed,
                  VerifySettings(timeout_s=sc.sandbox_timeout_s, workers=sc.sandbox_workers, mutants=sc.mutants,
                                 min_kill_fraction=sc.min_kill_fraction, min_asserts=sc.min_asserts),
                  progress=lambda method, n: _advance(bars, method, n, sc.items_per_method, ctx, progress))
    gen_start = time.monotonic()
    items, stopped = run_generators(ctx, methods, sc.items_per_method)
    for bar in bars.values():
        bar.close()
    gen_s = time.monotonic() - gen_start
    qc_start = time.monotonic()
    kept, dropped, counts = run_quality(items, QCEnv(ctx, sc, config, {k: v["verdict"] for k, v in review.items()}
                                                     if review is not None else None))
    qc_s = time.monotonic() - qc_start

    staging = staging_dir(workdir)
    shards = write_shards([training_row(it, sc.output_format) for it in kept], staging, "train", "jsonl",
                          sc.shard_rows)
    with open(os.path.join(staging, "rejected.jsonl"), "w", encoding="utf-8") as f:
        for it, stage, reason in dropped:
            f.write(json.dumps({**_item_record(it), "stage": stage, "reason": reason}, ensure_ascii=False) + "\n")
    export_review(kept, staging, review)
    report = _report(ctx, methods, items, kept, counts, stopped, snippet_info, gen_s, qc_s)
    report_files = write_report(report, staging, plots=sc.plots)
    summary = {"candidates": len(items), "kept": len(kept), "stopped_early": stopped, "backend": backend.name,
               "files": {"train": shards, "report": [os.path.relpath(f, staging) for f in report_files]},
               "out_dir": workdir,
               "by_method": {m: report["generation"][m]["kept"] for m in methods},
               "seconds": round(time.monotonic() - start, 2)}
    write_json(os.path.join(staging, "summary.json"), summary)
    write_config(config, staging)
    swap_in(workdir)
    log.info("synth: %d of %d candidates kept -> %s", len(kept), len(items), os.path.join(workdir, "train-*.jsonl"))
    return summary


def _advance(bars: dict, method: str, n: int | None, total: int, ctx: Context, enabled: bool) -> None:
    """One bar per method: items made (n; None = a batch of requests finished), with ETA, requests and tokens/s."""
    if method not in GENERATORS:  # the judge's calls, in quality control
        return
    if method not in bars:
        for other in bars.values():
            other.close()
        bars[method] = tqdm(total=total, desc=method, unit="item", disable=not enabled, dynamic_ncols=True)
    bar = bars[method]
    if n is not None:
        bar.update(max(0, min(n, total) - bar.n))
    st = ctx.stats.get(method, MethodStats())
    bar.set_postfix(req=st.requests, cached=st.cached, tok_s=f"{st.completion_tokens / max(st.seconds, 1e-9):.0f}")


def _report(ctx: Context, methods, items, kept, counts, stopped, snippet_info, gen_s, qc_s) -> dict:
    generation = {}
    for m in methods:
        st = ctx.stats.get(m, MethodStats())
        made = sum(it.method == m for it in items)
        generation[m] = {
            "candidates": made, "kept": sum(it.method == m for it in kept), "requests": st.requests,
            "cached_requests": st.cached, "errors": st.errors, "truncated": st.truncated,
            "prompt_tokens": st.prompt_tokens, "completion_tokens": st.completion_tokens,
            "seconds": round(st.seconds, 2), "items_per_s": round(made / max(st.seconds, 1e-9), 3),
            "tokens_per_s": round(st.completion_tokens / max(st.seconds, 1e-9), 1),
            "eliminated_in_method": dict(sorted(st.eliminated.items())),
        }
    verdicts = [v for v in ctx.verdicts.values() if v.mutants]
    return {
        "backend": ctx.backend.name, "methods": methods, "stages": list(STAGES),
        "candidates": len(items), "kept": len(kept), "stopped_early": stopped,
        "counts": counts, "generation": generation,
        "cache": {"hits": ctx.backend.hits, "misses": ctx.backend.misses},
        "budget": {"max_total_tokens": ctx.backend.budget.cap, "used": ctx.backend.budget.used},
        "verification": {"verified": len(ctx.verdicts), "passed": sum(v.ok for v in ctx.verdicts.values()),
                         "mutants": sum(v.mutants for v in verdicts), "killed": sum(v.killed for v in verdicts),
                         "unmutated": sum(v.ok and not v.mutants for v in ctx.verdicts.values())},
        "snippets": {"used": len(snippet_info.get("rows", [])), "skipped": snippet_info.get("skipped", {})},
        "seeds": len(ctx.seeds),
        "timing": {"generation_s": round(gen_s, 2), "quality_s": round(qc_s, 2)},
    }
