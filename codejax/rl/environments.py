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

`arith_tool` is the multi-turn task (rl.env='python'): "What is 47 * 29?", where the policy cannot
do the arithmetic in its head but can write `print(47 * 29)` and copy what the tool prints.
`arith_tool_prompts` gives RL rows (`answer`, read by the `exact_answer` reward) and
`arith_tool_chats` agentic-SFT trajectories: tool selection (small sums answered directly), tool
use, recovery from a failed call (a typo, then the fix) and two calls in one episode. Its tool
replies are what the `python` environment replies (codejax/rl/tool_envs.py), which a test checks
against the sandbox. Held out: a fixed 20% of the (a, operator, b) triples.

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


# ----------------------------------------------------------------------------- arith_tool

TOOL_OPS = ("+", "-", "*")


def _tool_problem(rng: random.Random, split: str | None, small: bool = False) -> tuple[int, str, int]:
    if split not in SPLITS:
        raise ValueError(f"split={split!r}; expected one of {SPLITS}")
    while True:
        a, b = (rng.randint(1, 9), rng.randint(1, 9)) if small else (rng.randint(10, 99), rng.randint(10, 99))
        op = "+" if small else rng.choice(TOOL_OPS)
        digest = hashlib.sha256(f"tool\0{a}\0{op}\0{b}".encode()).digest()
        held = int.from_bytes(digest[:8], "big") / 2.0 ** 64 < HELD_OUT_FRACTION
        if split is None or held == (split == "held_out"):
            return a, op, b


def _value(a: int, op: str, b: int) -> int:
    return {"+": a + b, "-": a - b, "*": a * b}[op]


def arith_tool_prompts(n: int, seed: int = 0, split: str | None = None) -> list[dict]:
    """{prompt, answer} rows: a sum, difference or product of two two-digit numbers."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, op, b = _tool_problem(rng, split)
        rows.append({"prompt": f"What is {a} {op} {b}?", "answer": str(_value(a, op, b))})
    return rows


def _syntax_error(code: str) -> str:
    try:
        compile(code, "<program>", "exec")
    except SyntaxError as e:
        return f"SyntaxError: {e}"
    raise ValueError(f"{code!r} compiles")


def arith_tool_chats(n: int, seed: int = 0, split: str | None = None, direct_fraction: float = 0.0) -> list[dict]:
    """Agentic-SFT rows {messages, tools} for arith_tool. Kinds, drawn per row: a one-digit sum
    answered without the tool (15%), a call then the answer, a failed call (a typo) then the fixed
    call (15%), two calls (a product, then a sum with its result; 15%). With `direct_fraction`, that
    share of the tool problems is answered directly instead (a warm start that uses the tool too
    rarely, so RL has something to fix: the direct answers are right, but not learnable)."""
    from codejax.rl.tool_envs import PYTHON_TOOL

    def call(code: str) -> dict:
        return {"role": "assistant", "content": "", "tool_calls": [{"name": "python", "arguments": {"code": code}}]}

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        kind = rng.random()
        if kind < 0.15:
            a, op, b = _tool_problem(rng, split, small=True)
            question, answer, turns = f"What is {a} {op} {b}?", _value(a, op, b), []
        else:
            a, op, b = _tool_problem(rng, split)
            question, answer = f"What is {a} {op} {b}?", _value(a, op, b)
            code = f"print({a} {op} {b})"
            turns = [call(code), {"role": "tool", "content": str(answer)}]
            if rng.random() < direct_fraction:
                turns = []
            elif kind < 0.30:
                typo = code[:-1]  # the closing parenthesis forgotten
                turns = [call(typo), {"role": "tool", "content": _syntax_error(typo)}] + turns
            elif kind < 0.45:
                c = rng.randint(10, 99)
                question = f"What is {a} {op} {b}, plus {c}?"
                turns += [call(f"print({answer} + {c})"), {"role": "tool", "content": str(answer + c)}]
                answer += c
        rows.append({"messages": [{"role": "user", "content": question}, *turns,
                                  {"role": "assistant", "content": str(answer)}], "tools": [PYTHON_TOOL]})
    return rows


# rl.builtin_task names -> (n, seed) -> prompt rows
ENVIRONMENTS = {"arith_functions": arith_prompts, "arith_tool": arith_tool_prompts}
