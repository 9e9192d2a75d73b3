"""Functional-correctness evaluation of code LLMs: benchmarks, pass@k, sandboxed scoring, code quality.

    from codejax.evaluation import load_benchmark, read_samples, score, write_report
    benchmark = load_benchmark("humaneval")            # or load_benchmark("mbpp", "mbpp.jsonl")
    report = score(benchmark, read_samples("samples.jsonl"), ks=(1, 10), quality=True)
    write_report(report, "out/")

Command line: `python -m codejax.evaluate --task humaneval --samples samples.jsonl`.
Generating and scoring with a codejax model: job `eval` (configs/eval.py).
"""
from codejax.evaluation.benchmarks import (BENCHMARKS, HUMANEVAL_STOP, MBPP, MBPP_STOP, MODES, Benchmark,
                                           BenchmarkDataError, HumanEval, Problem, Solution, extract_code,
                                           load_benchmark, truncate)
from codejax.evaluation.passk import parse_ks, pass_at_k, pass_at_ks
from codejax.evaluation.quality import QualityReport, analyze
from codejax.evaluation.scoring import Report, format_table, read_samples, score, write_report

__all__ = [
    "BENCHMARKS", "HUMANEVAL_STOP", "MBPP", "MBPP_STOP", "MODES", "Benchmark", "BenchmarkDataError", "HumanEval",
    "Problem", "QualityReport", "Report", "Solution", "analyze", "extract_code", "format_table", "load_benchmark",
    "parse_ks", "pass_at_k", "pass_at_ks", "read_samples", "score", "truncate", "write_report",
]
