"""One builder per task: a function's text in, a row's content (or a skip reason) out.

Every builder has the signature ``(job, rng) -> (fields, extra) | str``: ``fields`` holds
``instruction``/``input``/``output`` (or ``prompt``/``chosen``/``rejected`` for preference),
``extra`` per-task metadata for the row, and a plain string is the reason for a skip.
:mod:`codejax.codedata.tasks` documents each task and lays the fields out as rows.

A :class:`Job` is one function of one file plus what several builders share, computed on
first use and cached: the sandbox inputs for it, the original's probe output, and one
injected bug (so bug detection, repair and preference pairs agree on the same buggy
version, which is also executed only once).
"""

from __future__ import annotations

import ast
import difflib
import random
from collections.abc import Callable

import libcst as cst

from codejax.codedata.functions import docstring_summary
from codejax.codedata import augment
from codejax.codedata.augment import bugs, cst_tools, execution, rename, style
from codejax.codedata.tasks.source import Function, split_lines
from codejax.rl.tool_envs import PYTHON_TOOL, run_output
from codejax.sandbox import Program, run_programs

NOT_RUN = object()


class Job:
    """One function and the file it came from; caches what several builders need."""

    def __init__(self, fn: Function, program: str, known: set[str], options, seed: int, siblings: list[Function]):
        self.fn = fn
        self.program = program          # the whole file, made safe to run (source.module_program)
        self.known = known              # module-level names, for filtering doctest calls
        self.options = options
        self.seed = seed
        self.siblings = siblings        # the other functions of the file (code-search negatives)
        self._calls: list[str] | None = None
        self._outputs: dict[str, str | None] = {}
        self._bug = NOT_RUN
        self.bug_skip = ""              # why bug() found none: no_bug_site | bug_not_observable

    def rng(self, purpose: str) -> random.Random:
        """A generator for one purpose; rows of one task do not depend on which others run."""
        return random.Random(f"{self.seed}:{purpose}")

    @property
    def limits(self):
        return execution.default_limits(self.options.sandbox_timeout_s)

    @property
    def can_execute(self) -> bool:
        return self.options.check_with_sandbox and self.fn.module_level

    def calls(self) -> list[str]:
        """Inputs for the sandbox: doctest calls, then generated ones (module-level functions)."""
        if self._calls is None:
            calls = execution.doctest_calls(self.fn.docstring, self.fn.name, self.known) if self.fn.module_level else []
            node = ast.parse(self.fn.source).body[0]
            if self.can_execute and isinstance(node, ast.FunctionDef):
                calls += [c for c in execution.generated_calls(node, self.rng("inputs")) if c not in calls]
            self._calls = calls[:8]
        return self._calls

    def _with(self, function_source: str) -> str:
        """The file with ``function_source`` defined again at its end (replacing the original)."""
        return self.program + "\n\n" + function_source

    def behaves_same(self, new_function: str) -> bool | None:
        """Whether ``new_function`` acts like the original on :meth:`calls` (None: not checked)."""
        calls = self.calls() if self.can_execute else []
        if not calls:
            return None
        wanted = [s for s in (self.fn.source, new_function) if s not in self._outputs]
        if wanted:
            outputs = execution.probe([self._with(s) for s in wanted], calls, self.limits)
            self._outputs.update(zip(wanted, outputs))
        before, after = self._outputs[self.fn.source], self._outputs[new_function]
        if before is None:
            return None
        return before == after

    def bug(self) -> tuple[str, str, bool | None] | None:
        """``(buggy_source, kind, verified)`` shared by the bug tasks, or None.

        With sandbox checking and inputs, a bug that does not change any output is replaced
        by another draw (up to three); ``verified`` is True when a change was observed and
        None when it could not be checked.
        """
        if self._bug is NOT_RUN:
            rng, self._bug, self.bug_skip = self.rng("bug"), None, "no_bug_site"
            for _ in range(3):
                drawn = augment.inject_bug(self.fn.source, rng, self.options.bug_kinds)
                if drawn is None:
                    break
                same = self.behaves_same(drawn[0])
                if same is not True:
                    self._bug = (drawn[0], drawn[1], None if same is None else True)
                    break
                self.bug_skip = "bug_not_observable"
        return self._bug


def _lines(text: str) -> list[str]:
    return text.split("\n")


# --------------------------------------------------------------------------- generation

def function_impl(job: Job, rng: random.Random):
    """The seed's example: docstring summary + signature -> body (mine_source's row)."""
    row = job.fn.mined
    if row is None:
        return _mine_reason(job.fn)
    return {"instruction": row["instruction"], "input": row["input"], "output": row["output"]}, {}


def _mine_reason(fn: Function) -> str:
    from codejax.codedata.functions import mine_source

    try:
        _, skipped = mine_source(fn.source, max_body_lines=10**6)
    except (SyntaxError, ValueError):
        return "not_mined"
    return next(iter(skipped), "not_mined")


def completion(job: Job, rng: random.Random):
    """Signature, docstring and the first k body lines -> the rest (k >= 1, drawn)."""
    lines = job.fn.lines()
    header = job.fn.header_lines
    body = lines[header:]
    if len([b for b in body if b.strip()]) < 2:
        return "too_short"
    cut = header + rng.randint(1, len(body) - 1)
    while cut < len(lines) and not lines[cut - 1].strip():  # do not end the prompt on a blank line
        cut += 1
    if cut >= len(lines):
        return "too_short"
    return {"instruction": "Complete the following Python function.",
            "input": "".join(lines[:cut]), "output": "".join(lines[cut:])}, {}


def fim(job: Job, rng: random.Random):
    """A span of 1-5 whole body lines is the middle; psm/spm as in the tokenizer's fim_format."""
    from codejax.tokenizer.train import fim_format  # lazy: the tokenizer module imports transformers

    options = job.options
    if rng.random() >= options.fim_rate:
        return "not_sampled"
    mode = rng.choice(("psm", "spm")) if options.fim_mode == "both" else options.fim_mode
    lines = job.fn.lines()
    header = job.fn.header_lines
    if len(lines) - header < 1:
        return "too_short"
    start = rng.randrange(header, len(lines))
    end = min(len(lines), start + rng.randint(1, 5))
    prefix, middle, suffix = "".join(lines[:start]), "".join(lines[start:end]), "".join(lines[end:])
    if not middle.strip():
        return "blank_middle"
    prompt = fim_format(prefix, "", suffix, mode)
    assert prompt + middle == fim_format(prefix, middle, suffix, mode)
    return {"instruction": "Fill in the code missing between the prefix and the suffix (fill-in-the-middle).",
            "input": prompt, "output": middle}, {"fim_mode": mode}


def _doctest_checks(docstring: str | None) -> tuple[list[str], list[str]]:
    """(setup statements, checks) from doctest examples; see :func:`test_generation`."""
    setup, checks = [], []
    for example in execution.doctest_examples(docstring):
        source, want = example.source.strip(), example.want.strip()
        if example.options or not source:
            continue
        if example.exc_msg is not None:
            exc = want.splitlines()[-1].split(":")[0].split(".")[-1].strip()
            if exc.isidentifier() and "\n" not in source:
                checks.append(f"try:\n    {source}\nexcept {exc}:\n    pass\nelse:\n"
                              f"    raise AssertionError('expected {exc}')")
            continue
        try:
            ast.parse(source, mode="eval")
            is_expression = True
        except SyntaxError:
            is_expression = False
        if not want:
            if not is_expression:
                setup.append(source)
            continue
        if not is_expression or source.startswith("print(") or "\n" in source:
            continue
        try:
            value = ast.literal_eval(want)
            literal = repr(value) == want or "\n" in want
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            literal = False
        if literal:
            checks.append(f"assert {source} == {want}" if "\n" not in want else f"assert {source} == {value!r}")
        elif "\n" not in want:
            checks.append(f"assert repr({source}) == {want!r}")
    return setup, checks


def _assert_returns(call: str, literal: str) -> str:
    if literal == "True":
        return f"assert {call}"
    if literal == "False":
        return f"assert not {call}"
    return f"assert {call} == {literal}"


def test_generation(job: Job, rng: random.Random):
    """Function -> a ``test_<name>()`` of asserts, every one run against the original when the
    sandbox is on (see tasks.py for where the tests come from)."""
    fn = job.fn
    setup, checks = _doctest_checks(fn.docstring)
    origin = "doctest" if checks else ""
    if job.options.check_with_sandbox:
        generated = []
        if job.can_execute:
            node = ast.parse(fn.source).body[0]
            calls = execution.generated_calls(node, rng, 6) if isinstance(node, ast.FunctionDef) else []
            returns = execution.recorded_returns(job.program, calls, job.limits)
            generated = [_assert_returns(call, text) for call, text in returns.items()]
        if generated:
            origin = f"{origin}+execution" if origin else "execution"
        checks = checks + generated
        passed = execution.passing_checks(job.program, setup, checks, job.limits) if checks else []
        checks = [c for c, ok in zip(checks, passed) if ok]
    if not checks:
        return "no_tests"
    body = setup + checks[:8]
    test = f"def test_{fn.name}():\n" + "\n".join("\n".join("    " + ln for ln in s.splitlines()) for s in body) + "\n"
    return {"instruction": "Write unit tests for this Python function: a test function of plain assert statements.",
            "input": fn.source, "output": test}, {"test_origin": origin,
                                                  "verified": True if job.options.check_with_sandbox else None}


# --------------------------------------------------------------------------- understanding

def docstring(job: Job, rng: random.Random):
    """Code summarisation: the function without its docstring -> the docstring text."""
    row = job.fn.mined
    if row is None:
        return _mine_reason(job.fn)
    return {"instruction": "Write a docstring for this Python function.",
            "input": row["input"] + "\n" + row["output"], "output": job.fn.docstring}, {}


def _describe_bug(buggy: str, fixed: str, kind: str) -> str:
    a, b = _lines(buggy), _lines(fixed)
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        what = bugs.DESCRIPTIONS[kind]
        shown = "\n".join(a[i1:i2]).strip()
        wanted = "\n".join(b[j1:j2]).strip()
        if tag == "insert":
            return f"Yes: {what}. After line {i1}, the function is missing `{wanted}`."
        if tag == "delete":
            return f"Yes: {what}. Line {i1 + 1} `{shown}` should be removed."
        return f"Yes: {what}. Line {i1 + 1} reads `{shown}` but should read `{wanted}`."
    return "No bug found."


def bug_detection(job: Job, rng: random.Random):
    """Half the rows show the buggy version (answer: where and what), half the original."""
    drawn = job.bug()
    if drawn is None:
        return job.bug_skip
    buggy, kind, verified = drawn
    instruction = ("Does this Python function contain a bug? Answer 'No bug found.' or say which line "
                   "is wrong and how to fix it.")
    if rng.random() < 0.5:
        return ({"instruction": instruction, "input": buggy, "output": _describe_bug(buggy, job.fn.source, kind)},
                {"has_bug": True, "bug_kind": kind, "verified": verified})
    return ({"instruction": instruction, "input": job.fn.source, "output": "No bug found."},
            {"has_bug": False, "bug_kind": None, "verified": None})


def variable_naming(job: Job, rng: random.Random):
    """Locals masked as var_0, var_1, ... -> one 'var_k: name' line each."""
    out = rename.rename_locals(job.fn.source, rename.namer(rename.PLACEHOLDER, rng))
    if out is None:
        return "no_locals"
    masked, renames = out
    answer = "\n".join(f"{new}: {old}" for _, old, new in renames)
    return {"instruction": "The local variables of this Python function were renamed to var_0, var_1, ... "
                           "Suggest a descriptive name for each, one 'var_k: name' per line.",
            "input": masked, "output": answer}, {}


def signature(source: str) -> str | None:
    """The first def's header (no decorators), e.g. ``def f(x: int) -> str:``, kept as written."""
    module = cst_tools.parse_cst(source)
    if module is None:
        return None
    fn = next((s for s in module.body if isinstance(s, cst.FunctionDef)), None)
    if fn is None:
        return None
    stub = fn.with_changes(body=cst.SimpleStatementSuite(body=[cst.Expr(cst.Ellipsis())]),
                           decorators=[], leading_lines=[])
    text = module.code_for_node(stub).rstrip()
    return text[:-len("...")].rstrip() if text.endswith("...") else None


def type_inference(job: Job, rng: random.Random):
    """Function with its own parameter/return annotations stripped -> the annotated signature."""
    stripped = style.strip_annotations(job.fn.source, job.fn.name)
    if stripped is None:
        return "no_annotations"
    header = signature(job.fn.source)
    if header is None:
        return "no_signature"
    return {"instruction": "Infer the types of this Python function's parameters and return value. "
                           "Answer with the annotated signature.",
            "input": stripped, "output": header}, {}


def code_search(job: Job, rng: random.Random):
    """Query <-> code among up to four functions of the same file; direction drawn 50/50."""
    fn = job.fn
    if fn.mined is None:
        return _mine_reason(fn)
    others = [s for s in job.siblings if s.mined is not None and s.qualname != fn.qualname
              and docstring_summary(s.docstring) != docstring_summary(fn.docstring)]
    if not others:
        return "no_other_documented_function"
    pool = rng.sample(others, min(3, len(others))) + [fn]
    rng.shuffle(pool)
    letters = "ABCD"
    answer = letters[pool.index(fn)]
    if rng.random() < 0.5:
        options = "\n\n".join(f"{letters[i]}:\n{f.mined['input']}\n{f.mined['output']}" for i, f in enumerate(pool))
        return ({"instruction": "Which of these Python functions matches the description? Answer with its letter "
                                "and name.", "input": f"Description: {docstring_summary(fn.docstring)}\n\n{options}",
                 "output": f"{answer}: `{fn.name}`"}, {"direction": "query_to_code"})
    options = "\n".join(f"{letters[i]}: {docstring_summary(f.docstring)}" for i, f in enumerate(pool))
    return ({"instruction": "Which description matches this Python function? Answer with its letter and text.",
             "input": f"{fn.mined['input']}\n{fn.mined['output']}\n\nDescriptions:\n{options}",
             "output": f"{answer}: {docstring_summary(fn.docstring)}"}, {"direction": "code_to_query"})


# --------------------------------------------------------------------------- transformation

def repair(job: Job, rng: random.Random):
    """Buggy function -> the original."""
    drawn = job.bug()
    if drawn is None:
        return job.bug_skip
    buggy, kind, verified = drawn
    return ({"instruction": "Fix the bug in this Python function.", "input": buggy, "output": job.fn.source},
            {"bug_kind": kind, "verified": verified})


REFACTOR_INSTRUCTIONS = {
    "rename_variables": "Rename the local variables of this Python function without changing its behaviour.",
    "remove_comments": "Remove all comments from this Python code.",
    "add_comments": "Add short comments explaining the steps of this Python function.",
    "remove_docstrings": "Remove the docstrings from this Python code.",
    "add_docstrings": "Add a docstring to this Python function.",
    "for_to_while": "Rewrite the for loops in this Python function as while loops.",
    "while_to_for": "Rewrite the counting while loops in this Python function as for loops over range().",
    "swap_if_else": "Swap the branches of the if/else statements in this Python function, negating the "
                    "conditions, without changing its behaviour.",
    "fstring_to_format": "Convert the f-strings in this Python code to str.format() calls.",
    "format_to_fstring": "Convert the str.format() calls in this Python code to f-strings.",
}


def refactor(job: Job, rng: random.Random):
    """The first applicable transform (in drawn order) that passes its checks."""
    names = list(job.options.augmentations)
    rng.shuffle(names)
    rejected = False
    for name in names:
        new = augment.apply(name, job.fn.source, rng)
        if new is None:
            continue
        verified = job.behaves_same(new) if name in augment.BEHAVIOURAL else None
        if verified is False:
            rejected = True
            continue
        return ({"instruction": REFACTOR_INSTRUCTIONS.get(name, f"Apply the '{name}' transformation."),
                 "input": job.fn.source, "output": new}, {"transform": name, "verified": verified})
    return "not_equivalent" if rejected else "no_transform_applies"


def _body(source_lines: list[str], header: int) -> str:
    body = source_lines[header:]
    while body and not body[0].strip():
        body.pop(0)
    return "".join(body).rstrip("\n")


def preference(job: Job, rng: random.Random):
    """prompt = instruction + signature, chosen = the body, rejected = the bug-injected body."""
    fn = job.fn
    if fn.mined is None:
        return _mine_reason(fn)
    drawn = job.bug()
    if drawn is None:
        return job.bug_skip
    buggy, kind, verified = drawn
    chosen = _body(fn.lines(), fn.header_lines)
    rejected = _body(split_lines(buggy), fn.header_lines)
    if chosen != fn.mined["output"] or rejected == chosen:
        return "layout_mismatch"
    prompt = f"{fn.mined['instruction']}\n\n{fn.mined['input']}\n"
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}, {"bug_kind": kind, "verified": verified}


# --------------------------------------------------------------------------- agentic trajectory

def _print_call(source: str, call: str) -> str:
    return f"{source.rstrip()}\n\nprint(repr({call}))\n"


def tool_repair(job: Job, rng: random.Random):
    """A tool-use trajectory (chat with the python tool): the user gives the buggy function and what a call
    should return; the assistant runs the call, reads the real output or error, runs the fixed function and
    answers with it. Both tool replies are what the sandbox printed (codejax.rl.tool_envs.run_output), so
    the trajectory is what the `python` environment would show. Needs check_with_sandbox, generated or
    doctest inputs and a standalone function (one that runs without the rest of its file)."""
    if not job.can_execute:
        return "no_sandbox"
    drawn = job.bug()
    if drawn is None:
        return job.bug_skip
    buggy, kind, _ = drawn
    calls = job.calls()[:3]
    if not calls:
        return "no_inputs"
    programs = [Program(code=_print_call(src, c), name="tool_repair")
                for c in calls for src in (job.fn.source, buggy)]
    results = run_programs(programs, job.limits, workers=2, progress=False)
    for i, call in enumerate(calls):
        good, bad = results[2 * i], results[2 * i + 1]
        if good.passed and run_output(good) != run_output(bad):
            break
    else:
        return "not_standalone" if not any(r.passed for r in results[::2]) else "bug_not_observable"

    def run(code: str) -> dict:
        return {"role": "assistant", "content": "",
                "tool_calls": [{"name": "python", "arguments": {"code": code}}]}

    expected = good.stdout.strip()
    messages = [
        {"role": "user", "content": f"`{call}` should print `{expected}` with `print(repr(...))`, but this "
                                    f"function gets it wrong. Run it, find the bug and fix it.\n\n{buggy}"},
        run(_print_call(buggy, call)), {"role": "tool", "content": run_output(bad)},
        run(_print_call(job.fn.source, call)), {"role": "tool", "content": run_output(good)},
        {"role": "assistant", "content": f"The fixed function:\n\n```python\n{job.fn.source.rstrip()}\n```"},
    ]
    return {"messages": messages, "tools": [PYTHON_TOOL]}, {"bug_kind": kind, "verified": True}


BUILDERS: dict[str, Callable] = {
    "function_impl": function_impl, "completion": completion, "fim": fim, "test_generation": test_generation,
    "docstring": docstring, "bug_detection": bug_detection, "variable_naming": variable_naming,
    "type_inference": type_inference, "code_search": code_search, "repair": repair, "refactor": refactor,
    "preference": preference, "tool_repair": tool_repair,
}
