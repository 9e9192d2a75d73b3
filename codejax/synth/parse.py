"""Reading a teacher's reply: sections, code blocks, a score; and ROUGE-L for novelty and round trips.

The prompts (codejax/synth/prompts) ask for labelled sections:

    Instruction:
    ...
    Solution:
    ```python
    ...
    ```
    Tests:
    ```python
    assert ...
    ```

Teachers drift from any format, so the parser is lenient where it can be and says what was
missing where it cannot: a labelled fenced block wins, then the first fenced block, then (for a
reply that is bare code) the whole reply when it parses as Python. A section label is a line
starting with the name and a colon, optionally as a markdown heading or in bold.
"""
from __future__ import annotations

import ast
import re
from typing import NamedTuple

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[ \t]*\n(.*?)(?:```|\Z)", re.S)
_LABEL = re.compile(r"^[ \t]*(?:#+[ \t]*)?(?:\*\*)?(instruction|task|problem|new task|paraphrase|rewritten task|"
                    r"solution|code|tests?|unit tests)(?:\*\*)?[ \t]*:?(?:\*\*)?[ \t]*", re.I | re.M)
_SCORE = re.compile(r"score\s*[:=]?\s*(\d+(?:\.\d+)?)", re.I)
_CODE_LANGS = ("", "python", "py", "python3")


class Reply(NamedTuple):
    instruction: str  # '' when the reply has none
    solution: str
    tests: str


def _sections(text: str) -> dict[str, str]:
    """Label -> the text up to the next label (first occurrence of each label wins)."""
    marks = [(m.start(), m.end(), _canonical(m.group(1))) for m in _LABEL.finditer(text)]
    out: dict[str, str] = {}
    for i, (_, end, name) in enumerate(marks):
        stop = marks[i + 1][0] if i + 1 < len(marks) else len(text)
        out.setdefault(name, text[end:stop])
    return out


def _canonical(label: str) -> str:
    label = label.lower()
    if label in ("solution", "code"):
        return "solution"
    if label.startswith("test") or label == "unit tests":
        return "tests"
    return "instruction"


def code_blocks(text: str) -> list[str]:
    """The Python (or unlabelled) fenced blocks of `text`, in order; an unclosed last fence counts."""
    return [m.group(2).strip("\n") for m in _FENCE.finditer(text) if m.group(1).lower() in _CODE_LANGS]


def _first_block(text: str) -> str:
    blocks = code_blocks(text)
    return blocks[0] if blocks else ""


def parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):  # ValueError: NUL bytes
        return False
    return bool(code.strip())


def strip_fences(text: str) -> str:
    return _FENCE.sub(lambda m: m.group(2), text).strip()


def parse_reply(text: str) -> Reply:
    """Instruction, solution and tests of a reply in the prompts' format (each '' when absent)."""
    sections = _sections(text)
    instruction = strip_fences(sections.get("instruction", "")).strip()
    solution = _first_block(sections["solution"]) if "solution" in sections else ""
    tests = _first_block(sections["tests"]) if "tests" in sections else ""
    if "tests" in sections and not tests:  # unfenced asserts under a Tests: label
        tests = "\n".join(line for line in sections["tests"].splitlines() if line.strip().startswith("assert"))
    if not solution:
        blocks = [b for b in code_blocks(text) if b != tests]
        solution = blocks[0] if blocks else (text.strip() if not sections and parses(text) else "")
    if not tests and solution:  # asserts appended to the solution block: split them off
        body, asserts = split_asserts(solution)
        if asserts and parses(body):
            solution, tests = body, asserts
    return Reply(instruction, solution.strip("\n"), tests.strip("\n"))


def split_asserts(code: str) -> tuple[str, str]:
    """(code without its top-level asserts, those asserts), when the code parses; else (code, '')."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return code, ""
    lines = code.splitlines()
    drop: set[int] = set()
    asserts = []
    for node in tree.body:
        if isinstance(node, ast.Assert):
            span = range(node.lineno - 1, node.end_lineno)
            drop.update(span)
            asserts.append("\n".join(lines[i] for i in span))
    return "\n".join(line for i, line in enumerate(lines) if i not in drop).rstrip(), "\n".join(asserts)


def parse_task(text: str) -> str:
    """A reply that should be just a task (self-instruct, evolution, diversification): its text,
    without a leading label or a trailing solution the teacher added anyway."""
    sections = _sections(text)
    if "instruction" in sections:
        body = sections["instruction"]
    else:  # the text before the first Solution:/Tests: label
        first = _LABEL.search(text)
        body = text[:first.start()] if first else text
    body = body.split("```")[0]  # a code block starts the answer, which is not the task
    return body.strip()


def parse_score(text: str, low: float = 1, high: float = 10) -> float | None:
    """The judge's 'Score: N' (the first one), or None when there is none in [low, high]."""
    m = _SCORE.search(text)
    if not m:
        return None
    value = float(m.group(1))
    return value if low <= value <= high else None


# ----------------------------------------------------------------------------- ROUGE-L

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _lcs(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(a: str | list[str], b: str | list[str]) -> float:
    """ROUGE-L F1 over lower-cased word tokens (the measure self-instruct filters novelty with)."""
    ta, tb = (words(x) if isinstance(x, str) else x for x in (a, b))
    if not ta or not tb:
        return 0.0
    lcs = _lcs(ta, tb)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(tb), lcs / len(ta)
    return 2 * precision * recall / (precision + recall)


def max_rouge_l(text: str, pool: list[list[str]]) -> float:
    """The highest ROUGE-L of `text` against a pool of tokenised texts (0 for an empty pool)."""
    tokens = words(text)
    best = 0.0
    for other in pool:
        # LCS <= min(len), so F1 <= 2*min/(len_a+len_b): skip pairs that cannot beat the best so far.
        if 2 * min(len(tokens), len(other)) / max(len(tokens) + len(other), 1) <= best:
            continue
        best = max(best, rouge_l(tokens, other))
    return best
