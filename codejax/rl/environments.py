"""Built-in prompt environments: a small verifiable coding problem set for RL and preference learning.

`arith_functions` asks for the function a docstring describes:

    def f(x):
        \"\"\"Return x plus 3.\"\"\"
        return x            <- the prompt ends here; the answer is " + 3"

The answer is checked by asserts (`assert f(2) == 5`, ...) run in the sandbox, so the
execution reward is real, not a string match. The problems are deliberately tiny, so a
CPU-sized model can show the methods learning in minutes:

* `arith_prompts`: RL prompts with `tests` (a list of asserts) and `code_prefix` (the prompt:
  the code the completion continues), the columns `codejax.rl.rewards.unit_tests` reads;
* `arith_sft_rows`: a warm start that writes well-formed answers whose operator matches the
  docstring only `correct_fraction` of the time (so RL has something to fix);
* `arith_pairs`: preference pairs, the right operator chosen over a wrong one;
* `arith_humaneval`: every problem of a split once, as HumanEval-format rows for the `eval` job.

There are only 3 x 4 x 9 = 108 (operator, variable, constant) problems. With `split=None` the
generators draw from all of them (held-out sets made with another `seed` then repeat training
problems). `split="train"` / `"held_out"` draw only from a fixed partition of the combinations
(`is_held_out`), so a held-out score measures whether the operator words were learned, not
whether the answers were memorised.
"""
from __future__ import annotations

import hashlib
import itertools
import random

OPS = {"plus": "+", "minus": "-", "times": "*"}
VARIABLES = ("x", "n", "a", "value")
TEST_INPUTS = (2, 5, -3)


CONSTANTS = range(1, 10)
SPLITS = (None, "train", "held_out")
HELD_OUT_FRACTION = 0.2


def is_held_out(word: str, var: str, k: int) -> bool:
    """Whether the problem (word, var, k) is in the held-out split (a fixed ~20% of the combinations)."""
    digest = hashlib.sha256(f"{word}\0{var}\0{k}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64 < HELD_OUT_FRACTION


def _prompt(word: str, var: str, k: int) -> str:
    return f'def f({var}):\n    """Return {var} {word} {k}."""\n    return {var}'


def _problem(rng: random.Random, split: str | None = None) -> tuple[str, str, str, int]:
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; expected one of {SPLITS}")
    while True:  # rejection keeps split=None's draws (and so every existing seed's rows) unchanged
        word = rng.choice(sorted(OPS))
        var = rng.choice(VARIABLES)
        k = rng.randint(1, 9)
        if split is None or is_held_out(word, var, k) == (split == "held_out"):
            return _prompt(word, var, k), word, var, k


def _answer(op: str, k: int) -> str:
    return f" {op} {k}"


def _tests(word: str, k: int) -> list[str]:
    op = OPS[word]
    return [f"assert f({x}) == {eval(f'{x} {op} {k}')}" for x in TEST_INPUTS]  # noqa: S307 - our own literals


def arith_prompts(n: int, seed: int = 0, split: str | None = None) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt, word, _, k = _problem(rng, split)
        rows.append({"prompt": prompt, "code_prefix": prompt, "tests": _tests(word, k),
                     "answer": _answer(OPS[word], k)})
    return rows


def arith_sft_rows(n: int, seed: int = 0, correct_fraction: float = 1 / 3,
                   split: str | None = None) -> list[dict]:
    """{prompt, completion} rows; the operator is right with probability `correct_fraction`, else another one."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt, word, _, k = _problem(rng, split)
        op = OPS[word] if rng.random() < correct_fraction else rng.choice([o for w, o in OPS.items() if w != word])
        rows.append({"prompt": prompt, "completion": _answer(op, k)})
    return rows


def arith_pairs(n: int, seed: int = 0, split: str | None = None) -> list[dict]:
    """{prompt, chosen, rejected}: the right operator over a random wrong one (same constant)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt, word, _, k = _problem(rng, split)
        wrong = rng.choice([o for w, o in OPS.items() if w != word])
        rows.append({"prompt": prompt, "chosen": _answer(OPS[word], k), "rejected": _answer(wrong, k)})
    return rows


def arith_humaneval(split: str = "held_out") -> list[dict]:
    """Every problem of `split` once, as HumanEval rows (task_id, prompt, canonical_solution, test,
    entry_point) that `codejax.evaluation.load_benchmark("humaneval", path)` reads."""
    rows = []
    for word, var, k in itertools.product(sorted(OPS), VARIABLES, CONSTANTS):
        if split is not None and is_held_out(word, var, k) != (split == "held_out"):
            continue
        checks = "".join(f"\n    {t.replace('assert f(', 'assert candidate(')}" for t in _tests(word, k))
        rows.append({"task_id": f"arith/{word}_{var}_{k}", "prompt": _prompt(word, var, k),
                     "canonical_solution": _answer(OPS[word], k), "test": f"def check(candidate):{checks}\n",
                     "entry_point": "f"})
    return rows


# rl.builtin_task names -> (n, seed) -> prompt rows
ENVIRONMENTS = {"arith_functions": arith_prompts}
