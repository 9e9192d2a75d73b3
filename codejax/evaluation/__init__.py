"""Functional-correctness evaluation of code LLMs: benchmarks, pass@k, sandboxed scoring, code quality.

    from codejax.evaluation import load_task, read_samples, score, write_report
    task = load_task("humaneval")                      # or load_task("mbpp", "mbpp.jsonl")
    report = score(task, read_samples("samples.jsonl"), ks=(1, 10), quality=True)
    write_report(report, "out/")

Command line: `python -m codejax.evaluate --task humaneval --samples samples.jsonl`.
Generating and scoring with a codejax model: job `eval` (configs/eval.py).
"""
from codejax.evaluation.passk import parse_ks, pass_at_k, pass_at_ks
from codejax.evaluation.quality import QualityReport, analyze
from codejax.evaluation.scoring import Report, format_table, read_samples, score, write_report
from codejax.evaluation.tasks import (HUMANEVAL_STOP, MBPP_STOP, MODES, TASKS, HumanEval, MBPP, Problem, Solution,
                                      Task, TaskDataError, extract_code, load_task, truncate)

__all__ = [
    "HUMANEVAL_STOP", "MBPP", "MBPP_STOP", "MODES", "TASKS", "HumanEval", "Problem", "QualityReport", "Report",
    "Solution", "Task", "TaskDataError", "analyze", "extract_code", "format_table", "load_task", "parse_ks",
    "pass_at_k", "pass_at_ks", "read_samples", "score", "truncate", "write_report",
]
