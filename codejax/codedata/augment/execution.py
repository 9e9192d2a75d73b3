"""Execute code in the sandbox to check transforms and to derive or verify unit tests.

Inputs are call expressions such as ``"f(1, 2)"``. They come from two places:

* :func:`doctest_calls`: the ``>>>`` examples in a function's docstring that are single
  expressions calling it (and naming only it, builtins and module-level names);
* :func:`generated_calls`: a small type-driven generator for module-level functions whose
  required parameters are annotated ``int``/``float``/``str``/``bool``/``list[...]`` (or,
  unannotated, carry a conventional name such as ``n``, ``s``, ``items``). Values are drawn
  from short fixed pools with the caller's ``random.Random``.

Each probe prints one line per call: ``returns <canonical repr>`` or ``raises <ExcType>``.
The canonical repr sorts set elements (string hashing differs between processes) and
strips memory addresses, and materialises at most 1000 items of a generator, so two runs
of the same code print the same text. Anything the code prints itself is compared too.
"""

from __future__ import annotations

import ast
import builtins
import doctest
import random
import re
import typing

from codejax.sandbox import Limits, Program, run_programs

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_MARK = "@@codejax-probe@@"  # plain ASCII: str.splitlines would split on \x1e

_PROBE = '''
def _codejax_canon(value, depth=0):
    import types as _t, itertools as _it
    if depth > 20:
        return "..."
    if isinstance(value, (set, frozenset)):
        inner = sorted(_codejax_canon(v, depth + 1) for v in value)
        return type(value).__name__ + "{" + ", ".join(inner) + "}"
    if isinstance(value, (list, tuple)):
        return type(value).__name__ + "[" + ", ".join(_codejax_canon(v, depth + 1) for v in value) + "]"
    if isinstance(value, dict):
        return "dict{" + ", ".join(_codejax_canon(k, depth + 1) + ": " + _codejax_canon(v, depth + 1)
                                  for k, v in value.items()) + "}"
    if isinstance(value, _t.GeneratorType):
        return "generator" + _codejax_canon(list(_it.islice(value, 1000)), depth + 1)
    return repr(value)


def _codejax_probe(thunk):
    try:
        value = thunk()
        return "returns " + _codejax_canon(value)
    except Exception as error:
        return "raises " + type(error).__name__
'''


def default_limits(timeout_s: float = 5.0) -> Limits:
    return Limits(timeout_s=timeout_s, memory_mb=1024)


def _check_calls(calls: list[str]) -> None:
    for call in calls:
        try:
            ast.parse(call, mode="eval")
        except SyntaxError as e:
            raise ValueError(f"call {call!r} is not a Python expression: {e.msg}") from None


def probe_program(source: str, calls: list[str]) -> Program:
    """A program that runs ``source`` and prints what each call returns or raises."""
    lines = [_PROBE] + [f"print({_MARK!r}, {i}, _codejax_probe(lambda: ({call})))" for i, call in enumerate(calls)]
    return Program(code=source, tests="\n".join(lines), name="probe")


def normalise(stdout: str) -> str:
    return _ADDRESS.sub("", stdout)


def probe(sources: list[str], calls: list[str], limits: Limits | None = None) -> list[str | None]:
    """Per source: the normalised probe output, or None if the program did not run to the end."""
    _check_calls(calls)
    results = run_programs([probe_program(s, calls) for s in sources], limits or default_limits(),
                           workers=min(2, len(sources)), progress=False)
    return [normalise(r.stdout) if r.passed else None for r in results]


def check_equivalent(original: str, transformed: str, calls: list[str], limits: Limits | None = None) -> bool | None:
    """Run both sources on the same calls in the sandbox and compare what they print.

    Returns None when there is nothing to check (no calls, or the original itself does not
    run to the end, e.g. it needs a module the sandbox lacks), True when every call returns
    equal canonical reprs (or raises the same exception type) and the printed output
    matches, False otherwise (a crash or timeout of the transformed code included).
    """
    if not calls:
        return None
    before, after = probe([original, transformed], calls, limits)
    if before is None:
        return None
    return after == before


# --------------------------------------------------------------------------- inputs

def doctest_examples(docstring: str | None) -> list[doctest.Example]:
    if not docstring:
        return []
    try:
        return doctest.DocTestParser().get_examples(docstring)
    except ValueError:  # inconsistent indentation and the like
        return []


def _free_names(expr: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}


def doctest_calls(docstring: str | None, name: str, known: set[str]) -> list[str]:
    """Expression examples from ``docstring`` that call ``name`` and use only ``known`` names."""
    calls = []
    allowed = known | set(dir(builtins)) | {name}
    for example in doctest_examples(docstring):
        source = example.source.strip()
        try:
            tree = ast.parse(source, mode="eval")
        except SyntaxError:
            continue
        calls_it = any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name
                       for n in ast.walk(tree))
        if calls_it and _free_names(tree) <= allowed and source not in calls:
            calls.append(source)
    return calls


_INTS = (-3, -1, 0, 1, 2, 3, 5, 7, 10)
_FLOATS = (-1.5, 0.0, 0.5, 1.0, 2.25, 10.0)
_STRS = ("", "a", "abc", "Hello, World", "  padded  ", "a,b,c", "123", "racecar", "The quick brown fox")
_INT_NAMES = {"n", "i", "j", "k", "m", "count", "num", "size", "index", "idx", "width", "height", "length",
              "start", "stop", "end", "step", "limit", "depth", "level", "number", "times", "offset"}
_STR_NAMES = {"s", "text", "string", "word", "line", "prefix", "suffix", "sep", "char", "ch", "name", "sentence"}
_LIST_NAMES = {"xs", "items", "values", "lst", "seq", "nums", "numbers", "arr", "array", "elements"}


def _kind(annotation: ast.expr | None, name: str) -> str | None:
    """The value kind a parameter takes: int, float, str, bool, list[int], list[str] or None."""
    if annotation is None:
        if name in _INT_NAMES:
            return "int"
        if name in _STR_NAMES:
            return "str"
        if name in _LIST_NAMES:
            return "list[int]"
        return None
    text = ast.unparse(annotation).replace("typing.", "").replace(" ", "")
    for prefix in ("List[", "Sequence[", "Iterable[", "list[", "tuple[", "Tuple["):
        if text.startswith(prefix):
            inner = text[len(prefix):-1].split(",")[0]
            return f"list[{inner}]" if inner in ("int", "str", "float") else None
    return {"int": "int", "float": "float", "str": "str", "bool": "bool", "list": "list[int]"}.get(text)


def _value(kind: str, rng: random.Random) -> typing.Any:
    if kind == "int":
        return rng.choice(_INTS)
    if kind == "float":
        return rng.choice(_FLOATS)
    if kind == "str":
        return rng.choice(_STRS)
    if kind == "bool":
        return rng.random() < 0.5
    inner = kind[len("list["):-1]
    return [_value(inner, rng) for _ in range(rng.randrange(0, 6))]


def generated_calls(function: ast.FunctionDef, rng: random.Random, count: int = 4) -> list[str]:
    """Up to ``count`` distinct calls of a module-level ``function`` with generated arguments.

    Only required positional parameters get values (defaults are left alone); if any of
    them has no recognisable kind, there are no calls.
    """
    args = function.args
    positional = [*args.posonlyargs, *args.args]
    required = positional[:len(positional) - len(args.defaults)]
    if any(kw_default is None for kw_default in args.kw_defaults):
        return []  # a required keyword-only parameter we would have to name
    kinds = [_kind(a.annotation, a.arg) for a in required]
    if any(k is None for k in kinds):
        return []
    calls: list[str] = []
    for _ in range(count * 3):
        call = f"{function.name}({', '.join(repr(_value(k, rng)) for k in kinds)})"
        if call not in calls:
            calls.append(call)
        if len(calls) == count:
            break
    return calls


# --------------------------------------------------------------------------- test runs

def recorded_returns(source: str, calls: list[str], limits: Limits | None = None) -> dict[str, str]:
    """For each call that returns a value whose repr is a Python literal: that repr.

    Used to turn generated inputs into ``assert f(x) == <literal>`` tests; the literal is
    kept only if evaluating it gives back a value with the same repr.
    """
    if not calls:
        return {}
    lines = [f"print({_MARK!r}, {i}, _codejax_repr(lambda: ({c})))" for i, c in enumerate(calls)]
    helper = ("def _codejax_repr(thunk):\n    try:\n        return repr(thunk())\n"
              "    except Exception:\n        return ''\n")
    result = run_programs([Program(code=source, tests=helper + "\n".join(lines), name="record")],
                          limits or default_limits(), workers=1, progress=False)[0]
    if not result.passed:
        return {}
    out = {}
    for line in result.stdout.split("\n"):
        if not line.startswith(_MARK + " "):
            continue
        _, index, text = line.split(" ", 2)
        if not text or len(text) > 200:
            continue
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if repr(value) == text and value is not None:
            out[calls[int(index)]] = text
    return out


def passing_checks(source: str, setup: list[str], checks: list[str], limits: Limits | None = None) -> list[bool]:
    """Which of ``checks`` (statements, usually asserts) pass after ``source`` and ``setup`` run.

    Each check runs in its own ``try``, so one failure does not hide the others; if the
    program does not run to the end (a setup statement fails, a timeout), none passes.
    """
    if not checks:
        return []
    body = list(setup)
    for i, check in enumerate(checks):
        indented = "\n".join("    " + line for line in check.splitlines())
        body.append(f"try:\n{indented}\nexcept Exception:\n    pass\nelse:\n    print({_MARK!r}, {i})")
    result = run_programs([Program(code=source, tests="\n".join(body), name="checks")],
                          limits or default_limits(), workers=1, progress=False)[0]
    if not result.passed:
        return [False] * len(checks)
    ok = {int(line.split(" ")[1]) for line in result.stdout.split("\n") if line.startswith(_MARK + " ")}
    return [i in ok for i in range(len(checks))]
