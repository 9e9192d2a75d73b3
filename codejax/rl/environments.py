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
* `arith_pairs`: preference pairs, the right operator chosen over a wrong one.

Held-out splits use `seed`; which (operator, constant, variable) combinations appear is random,
so held-out prompts are mostly combinations not seen in training.
"""
from __future__ import annotations

import random

OPS = {"plus": "+", "minus": "-", "times": "*"}
VARIABLES = ("x", "n", "a", "value")
TEST_INPUTS = (2, 5, -3)


def _problem(rng: random.Random) -> tuple[str, str, str, int]:
    word = rng.choice(sorted(OPS))
    var = rng.choice(VARIABLES)
    k = rng.randint(1, 9)
    prompt = f'def f({var}):\n    """Return {var} {word} {k}."""\n    return {var}'
    return prompt, word, var, k


def _answer(op: str, k: int) -> str:
    return f" {op} {k}"


def _tests(word: str, k: int) -> list[str]:
    op = OPS[word]
    return [f"assert f({x}) == {eval(f'{x} {op} {k}')}" for x in TEST_INPUTS]  # noqa: S307 - our own literals


def arith_prompts(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt, word, _, k = _problem(rng)
        rows.append({"prompt": prompt, "code_prefix": prompt, "tests": _tests(word, k),
                     "answer": _answer(OPS[word], k)})
    return rows


def arith_sft_rows(n: int, seed: int = 0, correct_fraction: float = 1 / 3) -> list[dict]:
    """{prompt, completion} rows; the operator is right with probability `correct_fraction`, else another one."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt, word, _, k = _problem(rng)
        op = OPS[word] if rng.random() < correct_fraction else rng.choice([o for w, o in OPS.items() if w != word])
        rows.append({"prompt": prompt, "completion": _answer(op, k)})
    return rows


def arith_pairs(n: int, seed: int = 0) -> list[dict]:
    """{prompt, chosen, rejected}: the right operator over a random wrong one (same constant)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt, word, _, k = _problem(rng)
        wrong = rng.choice([o for w, o in OPS.items() if w != word])
        rows.append({"prompt": prompt, "chosen": _answer(OPS[word], k), "rejected": _answer(wrong, k)})
    return rows


# rl.builtin_task names -> (n, seed) -> prompt rows
ENVIRONMENTS = {"arith_functions": arith_prompts}
