"""Multi-task mixing and curriculum ordering of the training rows.

Mixing gives task i (with n_i rows) the share p_i of `total` rows (0 = sum of n_i):

  equal          p_i = 1 / k
  proportional   p_i = n_i / sum n
  temperature    p_i ∝ n_i ** (1 / τ)   (τ = 1 is proportional, τ -> inf is equal; T5's
                 temperature-scaled mixing, which lifts small tasks without drowning big ones)
  weights        p_i ∝ w_i from "task=w,...": unnamed tasks get 0 and are left out

Shares become row counts by the largest-remainder rule, so they sum to `total` exactly.
A task with enough rows is sampled without replacement; one with fewer is repeated
whole as often as fits and sampled for the rest (repeats are reported). Everything draws
from one seeded `random.Random`, so a rerun gives the same rows in the same order.

Curriculum orders the mixed rows by difficulty: `length` (characters of the row's text)
or `complexity` (the row's `difficulty` field, which the task builders set from the
code's complexity; rows without one fall back to length). Schedules: `sorted` (easy to
hard), `buckets:K` (K equal-size buckets from easy to hard, shuffled within each, so
neighbouring batches are not all near-identical in size). With curriculum `none` the
rows are shuffled.
"""
from __future__ import annotations

import math
import random

from codejax.codedata.decontam import row_text

STRATEGIES = ("equal", "proportional", "temperature", "weights")
CURRICULA = ("none", "length", "complexity")


def parse_weights(spec: str) -> dict[str, float]:
    weights = {}
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        name, eq, value = item.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not eq or not name.strip() or weight < 0 or not math.isfinite(weight):
            raise ValueError(f"data_pipeline.mix_weights: entry {item!r} is not task=non-negative-number")
        weights[name.strip()] = weight
    return weights


def mixture(counts: dict[str, int], strategy: str, temperature: float = 1.0,
            weights: dict[str, float] | None = None) -> dict[str, float]:
    """Share of each task with rows (sums to 1; empty if nothing can be drawn)."""
    tasks = sorted(t for t, n in counts.items() if n > 0)
    if strategy == "equal":
        raw = {t: 1.0 for t in tasks}
    elif strategy == "proportional":
        raw = {t: float(counts[t]) for t in tasks}
    elif strategy == "temperature":
        if temperature <= 0:
            raise ValueError(f"data_pipeline.mix_temperature must be > 0, got {temperature}")
        raw = {t: counts[t] ** (1.0 / temperature) for t in tasks}
    elif strategy == "weights":
        if not weights:
            raise ValueError("data_pipeline.mix_strategy='weights' needs data_pipeline.mix_weights "
                             "('task=w,...')")
        raw = {t: weights.get(t, 0.0) for t in tasks}
    else:
        raise ValueError(f"data_pipeline.mix_strategy={strategy!r}; expected one of {STRATEGIES}")
    norm = sum(raw.values())
    return {t: w / norm for t, w in raw.items() if w > 0} if norm > 0 else {}


def allocate(shares: dict[str, float], total: int) -> dict[str, int]:
    """Row counts in proportion to `shares` that sum to `total` (largest remainder; ties by name)."""
    exact = {t: p * total for t, p in shares.items()}
    counts = {t: math.floor(x) for t, x in exact.items()}
    left = total - sum(counts.values())
    for t in sorted(exact, key=lambda t: (counts[t] - exact[t], t))[:left]:
        counts[t] += 1
    return counts


def mix(rows_by_task: dict[str, list[dict]], strategy: str, temperature: float, weights: dict[str, float],
        total: int, rng: random.Random) -> tuple[list[dict], dict]:
    """(mixed rows in shuffled order, per-task stats)."""
    counts = {t: len(rows) for t, rows in rows_by_task.items()}
    shares = mixture(counts, strategy, temperature, weights)
    targets = allocate(shares, total or sum(counts.values()))
    mixed, stats = [], {}
    for task in sorted(rows_by_task):
        rows, want = rows_by_task[task], targets.get(task, 0)
        repeats, rest = divmod(want, len(rows)) if rows else (0, 0)
        picked = rows * repeats + [rows[i] for i in sorted(rng.sample(range(len(rows)), rest))]
        mixed += picked
        stats[task] = {"available": len(rows), "share": round(shares.get(task, 0.0), 6), "rows": len(picked),
                       "repeated": max(0, len(picked) - len(rows))}
    rng.shuffle(mixed)
    return mixed, stats


def difficulty(row: dict, curriculum: str) -> float:
    if curriculum == "complexity" and isinstance(row.get("difficulty"), (int, float)):
        return float(row["difficulty"])
    return float(len(row_text(row)))


def parse_schedule(schedule: str) -> int:
    """Buckets of a schedule: 'sorted' -> 0, 'buckets:K' -> K."""
    if schedule == "sorted":
        return 0
    name, _, k = schedule.partition(":")
    if name == "buckets" and k.isdigit() and int(k) >= 1:
        return int(k)
    raise ValueError(f"data_pipeline.curriculum_schedule={schedule!r}; expected 'sorted' or 'buckets:K'")


def order(rows: list[dict], curriculum: str, schedule: str, rng: random.Random) -> list[dict]:
    """Rows in curriculum order (see the module docstring); `rows` must already be shuffled."""
    if curriculum not in CURRICULA:
        raise ValueError(f"data_pipeline.curriculum={curriculum!r}; expected one of {CURRICULA}")
    buckets = parse_schedule(schedule)
    if curriculum == "none":
        return rows
    ranked = sorted(rows, key=lambda r: difficulty(r, curriculum))  # stable: ties keep the shuffle
    if not buckets:
        return ranked
    out = []
    for b in range(buckets):
        bucket = ranked[b * len(ranked) // buckets:(b + 1) * len(ranked) // buckets]
        rng.shuffle(bucket)
        out += bucket
    return out
