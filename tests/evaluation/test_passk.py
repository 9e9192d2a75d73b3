"""pass@k against an exact combinatorial computation, and how k > n is handled."""
import math
from fractions import Fraction

import numpy as np
import pytest

from codejax.evaluation.passk import parse_ks, pass_at_k, pass_at_ks


def _exact(n: int, c: int, k: int) -> float:
    """1 - C(n-c, k) / C(n, k) in exact rational arithmetic (math.comb is 0 when k > n - c)."""
    return float(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))


def test_estimator_matches_the_binomial_formula_on_random_cases():
    rng = np.random.default_rng(0)
    for _ in range(500):
        n = int(rng.integers(1, 400))  # up to n where C(n, k) overflows float64
        c = int(rng.integers(0, n + 1))
        k = int(rng.integers(1, n + 1))
        assert pass_at_k(n, c, k) == pytest.approx(_exact(n, c, k), rel=1e-9, abs=1e-12), (n, c, k)


def test_edge_cases():
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 10, 10) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the fraction correct
    assert pass_at_k(5, 1, 5) == 1.0  # every 5-subset of 5 holds the correct one
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)
    with pytest.raises(ValueError, match="pass@6"):
        pass_at_k(5, 1, 6)


def test_mean_over_problems_and_k_larger_than_n_is_skipped():
    counts = [(10, 0), (10, 5), (20, 20)]
    scores, skipped = pass_at_ks(counts, (1, 10, 100))
    assert scores["pass@1"] == pytest.approx(np.mean([0.0, 0.5, 1.0]))
    assert scores["pass@10"] == pytest.approx(np.mean([_exact(n, c, 10) for n, c in counts]))
    assert set(skipped) == {"pass@100"} and "3 of 3 problems" in skipped["pass@100"]
    scores, skipped = pass_at_ks(counts, (15,))  # two problems have only 10 samples: no partial average
    assert not scores and "2 of 3" in skipped["pass@15"]


def test_parse_ks():
    assert parse_ks("10, 1,100,1") == (1, 10, 100)
    assert parse_ks(5) == (5,) and parse_ks([2, 1]) == (1, 2)
    for bad in ("", "0", "a,b", "1,-2"):
        with pytest.raises(ValueError, match="comma-separated"):
            parse_ks(bad)
