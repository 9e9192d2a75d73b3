"""Execution verification of generated (solution, tests) pairs, in the sandbox.

A synthetic item passes when
1. its tests, reduced to the *safe assert form* below, keep at least `min_asserts` asserts that
   call something the solution defines;
2. the solution passes them in the sandbox (codejax.sandbox: the verdict comes from the judge
   process, so a solution that prints "all tests passed", exits early, or returns objects whose
   `__eq__` says yes does not pass);
3. the tests fail on mutated copies of the solution (CodeT / SelfCodeAlign): of up to `mutants`
   bugs injected by codejax.codedata.augment (operators, off-by-one, constants, conditions...),
   at least `min_kill_fraction` must fail. Tests that cannot fail (`assert True`, `f(1) == f(1)`,
   `f(x) is not None`) are caught here. A solution with no site for a bug skips this check and is
   counted (`unmutated`).

Why the safe assert form. The sandbox trusts its tests: they run in the judge, which holds the
verdict pipe. Here the tests come from the same teacher as the solution, so they are untrusted
too. Only top-level `assert <expression>` statements are kept, and the expression may use only
literals, arithmetic, comparisons, containers, comprehensions, calls, subscripts, the names the
solution defines (served by the program process as remote references) and a fixed list of pure
builtins; attributes starting with `_` and the frame/code/generator attributes (`gi_frame`,
`f_globals`, `format`...) through which judge-side objects reach the interpreter are refused.
So nothing the teacher writes can reach `open`, imports or the verdict pipe in the judge. Other
statements (imports, helper functions, loops, prints) are dropped and counted.
"""
from __future__ import annotations

import ast
import builtins
import dataclasses
import random
import re
from typing import Sequence

from codejax.sandbox import Limits, Program, run_programs

SAFE_BUILTINS = frozenset({
    "abs", "all", "any", "bool", "bytes", "chr", "complex", "dict", "divmod", "enumerate", "filter", "float",
    "frozenset", "int", "isinstance", "len", "list", "map", "max", "min", "ord", "pow", "range", "repr",
    "reversed", "round", "set", "sorted", "str", "sum", "tuple", "zip", "True", "False", "None",
    # exception classes, for `isinstance(result, ValueError)`-style checks
    "Exception", "ValueError", "TypeError", "KeyError", "IndexError", "ZeroDivisionError",
})
_BUILTIN_NAMES = frozenset(dir(builtins))
# Attribute names that lead from a judge-side object to frames, code, globals or format-string
# attribute walks; every other attribute is allowed (on the program's objects it runs over there).
_BAD_ATTR = re.compile(r"^(_|gi_|cr_|ag_|f_|tb_|co_|func_|im_)|^(format|format_map|mro|throw|send|with_traceback)$")
_ALLOWED_NODES = (
    ast.Expression, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Call, ast.keyword, ast.Constant,
    ast.Name, ast.Load, ast.Store, ast.List, ast.Tuple, ast.Set, ast.Dict, ast.Subscript, ast.Slice,
    ast.Attribute, ast.IfExp, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.comprehension,
    ast.JoinedStr, ast.FormattedValue, ast.Starred,
    ast.operator, ast.unaryop, ast.cmpop, ast.boolop,
)


@dataclasses.dataclass(frozen=True)
class VerifySettings:
    timeout_s: float = 5.0
    workers: int = 0  # 0 = CPU count
    mutants: int = 4
    min_kill_fraction: float = 0.5
    min_asserts: int = 1


@dataclasses.dataclass(frozen=True)
class SafeTests:
    code: str  # the kept asserts, one per line
    kept: int
    dropped: int  # statements that are not safe asserts
    reason: str = ""  # why nothing usable is left ('' when kept >= 1)


def defined_names(solution: str) -> frozenset[str]:
    """Top-level names the solution binds (functions, classes, assignments, imports), minus builtin
    names: a test's `len` or `open` must never resolve to something the judge would run itself."""
    try:
        tree = ast.parse(solution)
    except (SyntaxError, ValueError):
        return frozenset()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return frozenset(names - _BUILTIN_NAMES)


def _unsafe(expr: ast.AST, allowed_names: frozenset[str]) -> str | None:
    """Why an assert's expression is not in the safe form, or None."""
    bound = {n.id for node in ast.walk(expr) if isinstance(node, ast.comprehension)
             for n in ast.walk(node.target) if isinstance(n, ast.Name)}
    for node in ast.walk(expr):
        if not isinstance(node, _ALLOWED_NODES):
            return f"{type(node).__name__} is not allowed"
        if isinstance(node, ast.Attribute) and _BAD_ATTR.search(node.attr):
            return f"attribute .{node.attr} is not allowed"
        if isinstance(node, ast.Name) and node.id not in allowed_names and node.id not in bound:
            return f"name {node.id!r} is neither defined by the solution nor a safe builtin"
    return None


def safe_tests(tests: str, solution: str) -> SafeTests:
    """The tests reduced to the safe assert form (module docstring), each assert on its own."""
    try:
        tree = ast.parse(tests)
    except (SyntaxError, ValueError) as e:
        return SafeTests("", 0, 0, f"tests do not parse: {getattr(e, 'msg', e)}")
    defined = defined_names(solution)
    allowed = defined | SAFE_BUILTINS
    kept, dropped, why = [], 0, ""
    for node in tree.body:
        problem = "not an assert statement" if not isinstance(node, ast.Assert) else (
            _unsafe(ast.Expression(node.test), allowed) or (
                _unsafe(ast.Expression(node.msg), allowed) if node.msg is not None else None))
        if problem is None and not any(isinstance(n, ast.Name) and n.id in defined for n in ast.walk(node.test)):
            problem = "the assert does not use the solution"
        if problem is None:
            kept.append(ast.unparse(ast.Assert(node.test, None)))
        else:
            dropped += 1
            why = why or problem
    return SafeTests("\n".join(kept), len(kept), dropped, "" if kept else (why or "no asserts"))


def mutants(solution: str, count: int, seed: str) -> list[str]:
    """Up to `count` distinct buggy copies of the solution (codejax.codedata.augment.inject_bug)."""
    from codejax.codedata import augment

    rng = random.Random(seed)
    found: list[str] = []
    for _ in range(count * 3):
        if len(found) >= count:
            break
        try:
            out = augment.inject_bug(solution, rng)
        except (SyntaxError, ValueError):
            return found
        if out is None:
            break
        if out[0] not in found and out[0] != solution:
            found.append(out[0])
    return found


@dataclasses.dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str  # '' when ok; else a short drop reason (the report counts them)
    asserts: int = 0
    dropped_statements: int = 0
    mutants: int = 0
    killed: int = 0
    detail: str = ""  # the sandbox's reason for a failed solution


def verify(pairs: Sequence[tuple[str, str]], settings: VerifySettings, extra: Sequence[Sequence[str]] = (),
           names: Sequence[str] = ()) -> list[Verdict]:
    """Verdicts for (solution, tests) pairs. `extra[i]` are more solutions that must pass item i's
    tests too (backtranslation's round trip). Every program runs in one `run_programs` batch."""
    limits = Limits(timeout_s=settings.timeout_s)
    extra = list(extra) or [()] * len(pairs)
    names = list(names) or [str(i) for i in range(len(pairs))]
    programs: list[Program] = []
    plans: list[tuple[SafeTests | None, list[int], list[int], int]] = []
    for (solution, tests), more, name in zip(pairs, extra, names):
        st = safe_tests(tests, solution) if solution.strip() else None
        if st is None or st.kept < settings.min_asserts:
            plans.append((st, [], [], -1))
            continue
        first = len(programs)
        programs.append(Program(code=solution, tests=st.code, name=name))
        more_ix = []
        for code in more:
            more_ix.append(len(programs))
            programs.append(Program(code=code, tests=st.code, name=name + "/roundtrip"))
        mut_ix = []
        for m in mutants(solution, settings.mutants, name):
            mut_ix.append(len(programs))
            programs.append(Program(code=m, tests=st.code, name=name + "/mutant"))
        plans.append((st, more_ix, mut_ix, first))
    results = run_programs(programs, limits, workers=settings.workers or None, progress=False) if programs else []
    out = []
    for st, more_ix, mut_ix, first in plans:
        if first < 0:
            out.append(Verdict(False, "no_solution" if st is None else "no_safe_tests",
                               0 if st is None else st.kept, 0 if st is None else st.dropped,
                               detail="" if st is None else st.reason))
            continue
        base = dict(asserts=st.kept, dropped_statements=st.dropped, mutants=len(mut_ix))
        res = results[first]
        if not res.passed:
            out.append(Verdict(False, "tests_failed", **base, detail=f"{res.status.value}: {res.reason}"[:300]))
            continue
        if not all(results[i].passed for i in more_ix):
            out.append(Verdict(False, "roundtrip_failed", **base))
            continue
        killed = sum(not results[i].passed for i in mut_ix)
        if mut_ix and killed < settings.min_kill_fraction * len(mut_ix):
            out.append(Verdict(False, "weak_tests", **base, killed=killed))
            continue
        out.append(Verdict(True, "", **base, killed=killed))
    return out
