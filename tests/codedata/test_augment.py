"""Augmentation: every transform keeps behaviour (executed), every bug kind changes it
(executed), the scope/safety rules hold, and nothing crashes on real stdlib code."""

import ast
import random

import pytest

from codejax.corpus import list_source_files, stdlib_root
from codejax.codedata import augment
from codejax.codedata.augment import execution, rename, style
from codejax.sandbox import run_programs

# Small functions that between them give every augmentation something to do.
CORPUS = '''\
"""Helpers used to exercise the transforms."""
import math

SCALE = 2


def weighted(xs, n):
    """Return a weighted sum of xs with a few twists."""
    acc = 0  # running total
    for i in range(len(xs)):
        acc += xs[i] * n
    for j in range(10, 0, -3):
        acc -= j
    for a, b in zip(xs, xs[1:]):
        if a > b:
            continue
        acc += a
    k = 0
    while k < len(xs):
        acc += k * SCALE
        k += 1
    return acc


def describe(name, count, ratio):
    head = f"{name!r:>10} has {count} items"
    tail = "ratio={:.2f}, {}".format(ratio, name.upper())
    if count > 1:
        kind = "many"
    else:
        kind = "few"
    return head + "; " + tail + " " + kind


def roots(values):
    out = []
    for v in values:
        if v >= 0:
            out.append(round(math.sqrt(v), 3))
        else:
            out.append(None)
    return out
'''
CALLS = ["weighted([1, 2, 3], 2)", "weighted([], 1)", "weighted([5, 1, 4, 4], -1)", "weighted(None, 1)",
         "describe('ab', 3, 0.5)", "describe('', 1, 2)", "describe('x', 2, 1 / 3)",
         "roots([4, -1, 2])", "roots([])"]


def _outline(source):
    return [(type(n).__name__, n.name) for n in ast.walk(ast.parse(source))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]


def test_every_augmentation_applies_and_keeps_behaviour_in_the_sandbox():
    transformed = {name: augment.apply(name, CORPUS, random.Random(7)) for name in augment.AUGMENTATIONS}
    assert [n for n, out in transformed.items() if out is None] == []
    for name, out in transformed.items():
        assert out != CORPUS and _outline(out) == _outline(CORPUS), name
    # One batch: the original and all ten transformed modules on the same calls.
    names = list(transformed)
    outputs = execution.probe([CORPUS] + [transformed[n] for n in names], CALLS)
    assert outputs[0] is not None and outputs[0].count("returns") == 8 and "raises TypeError" in outputs[0]
    assert {n: out == outputs[0] for n, out in zip(names, outputs[1:])} == {n: True for n in names}


def test_check_equivalent_true_false_and_unknown():
    loops = augment.apply("for_to_while", CORPUS, random.Random(0))
    buggy = CORPUS.replace("acc += xs[i] * n", "acc += xs[i] * n + 1")
    assert augment.check_equivalent(CORPUS, loops, CALLS[:2]) is True
    assert augment.check_equivalent(CORPUS, buggy, CALLS[:2]) is False
    assert augment.check_equivalent(CORPUS, buggy, []) is None
    assert augment.check_equivalent("import no_such_module_here\n", CORPUS, ["1"]) is None
    with pytest.raises(ValueError, match="not a Python expression"):
        augment.check_equivalent(CORPUS, loops, ["weighted(["])


def test_for_to_while_shapes():
    out = augment.apply("for_to_while", CORPUS, random.Random(0))
    assert "i = 0\n    stop = len(xs)\n    while i < stop:" in out     # len() is re-evaluated: saved
    assert "j = 10\n    while j > 0:" in out and "j -= 3" in out      # literal bound used as is
    assert "iterator = iter(zip(xs, xs[1:]))" in out and "a, b = next(iterator)" in out  # has a continue
    # The loop variable is read after the loop: only the iterator form is equivalent.
    used_after = "def f(n):\n    for i in range(n):\n        pass\n    return i\n"
    assert "next(" in augment.apply("for_to_while", used_after, random.Random(0))
    # Module-level loops are left alone (their variables are globals).
    assert augment.apply("for_to_while", "for i in range(3):\n    print(i)\n", random.Random(0)) is None


@pytest.mark.parametrize("source", [
    # the bound is a parameter: not provably an int
    "def f(n):\n    i = 0\n    while i < n:\n        i += 1\n    return 0\n",
    # i is read after the loop
    "def f():\n    i = 0\n    while i < 3:\n        i += 1\n    return i\n",
    # the body mutates the sequence whose len() is the bound
    "def f(xs):\n    i = 0\n    while i < len(xs):\n        xs.pop()\n        i += 1\n    return xs\n",
    # a continue would skip the increment
    "def f():\n    t = 0\n    i = 0\n    while i < 5:\n        if i == 2:\n            continue\n        t += i\n        i += 1\n    return t\n",
    # a call could change xs through an alias
    "def f(xs, g):\n    i = 0\n    while i < len(xs):\n        g()\n        i += 1\n    return 0\n",
])
def test_while_to_for_refuses_what_it_cannot_prove(source):
    assert augment.apply("while_to_for", source, random.Random(0)) is None


def test_while_to_for_rewrites_a_provable_loop():
    source = "def f(xs):\n    out = []\n    i = 1\n    while i <= len(xs):\n        out.append(xs[i - 1])\n        i += 1\n    return out\n"
    assert augment.apply("while_to_for", source, random.Random(0)) == (
        "def f(xs):\n    out = []\n    for i in range(1, len(xs) + 1):\n        out.append(xs[i - 1])\n    return out\n")


def test_rename_touches_only_locals():
    source = '''\
total = 0

class C:
    def m(self, x, *, key=None):
        global total
        return x

    def n(self, x):
        value = self.value + x
        out = dict(value=value)
        return [value * k for k in range(3)], out, x

def dyn(a):
    b = a + 1
    return locals()
'''
    new, renames = rename.rename_locals(source, rename.namer(rename.PLACEHOLDER, random.Random(0)))
    assert renames == [("n", "value", "var_0"), ("n", "out", "var_1")]
    # Parameters, attributes, keywords, comprehension variables, globals and functions
    # that use locals() stay as they were.
    assert "self.value + x" in new and "dict(value=var_0)" in new and "for k in range(3)" in new
    assert "def m(self, x, *, key=None):\n        global total\n        return x" in new
    assert "b = a + 1\n    return locals()" in new
    assert augment.apply("rename_variables", "def f(x):\n    y = x\n    return eval('y')\n", random.Random(0)) is None
    assert augment.apply("rename_variables", "def f(x):\n    return f'{x=}'\n", random.Random(0)) is None


def test_rename_bytecode_proof_rejects_a_wrong_renaming():
    old = compile("def f(a):\n    b = a\n    return b\n", "<t>", "exec")
    good = compile("def f(a):\n    c = a\n    return c\n", "<t>", "exec")
    wrong = compile("def f(a):\n    c = a\n    return b\n", "<t>", "exec")   # 'b' became a global
    assert rename.same_bytecode(old, good, {"c": "b"})
    assert not rename.same_bytecode(old, wrong, {"c": "b"})


def test_string_transforms_skip_what_they_cannot_keep():
    source = "def f(x, w, g):\n    return f'{x=}', f'{x:{w}}', '{0}{0}'.format(g()), '{a}'.format(a=x)\n"
    assert augment.apply("fstring_to_format", source, random.Random(0)) is None
    assert augment.apply("format_to_fstring", source, random.Random(0)) == (
        "def f(x, w, g):\n    return f'{x=}', f'{x:{w}}', '{0}{0}'.format(g()), f'{x}'\n")


def test_comment_and_docstring_transforms():
    source = "#!/usr/bin/env python\n# -*- coding: utf-8 -*-\ndef f(x):  # trailing\n    # above\n    return x\n"
    assert augment.apply("remove_comments", source, random.Random(0)) == (
        "#!/usr/bin/env python\n# -*- coding: utf-8 -*-\ndef f(x):\n    return x\n")
    added = augment.apply("add_docstrings", "def get_user_id(user, default: int = 0) -> int:\n    return 1\n",
                          random.Random(0))
    assert ast.get_docstring(ast.parse(added).body[0]) == (
        "Return the user id.\n\nArgs:\n    user: The user.\n    default (int): The default. Defaults to 0.\n\n"
        "Returns:\n    int: The result.")
    stripped = augment.apply("remove_docstrings", added, random.Random(0))
    assert ast.dump(ast.parse(stripped)) == ast.dump(ast.parse("def get_user_id(user, default: int = 0) -> int:\n    return 1\n"))
    commented = augment.apply("add_comments", CORPUS, random.Random(0))
    assert commented.count("# ") > CORPUS.count("# ") and ast.dump(ast.parse(commented)) == ast.dump(ast.parse(CORPUS))


def test_strip_annotations_keeps_the_rest():
    source = "def f(a: int, b: str = 'x', *args: int, **kw: float) -> bool:\n    c: int = 1\n    return True\n"
    assert style.strip_annotations(source, "f") == "def f(a, b='x', *args, **kw):\n    c: int = 1\n    return True\n"
    assert style.strip_annotations("def f(a):\n    return a\n", "f") is None


def test_apply_and_augment_api():
    with pytest.raises(ValueError, match="unknown transform"):
        augment.apply("shuffle_lines", CORPUS, random.Random(0))
    out, applied = augment.augment(CORPUS, ["while_to_for", "remove_comments", "add_docstrings"], random.Random(3))
    assert applied == ["while_to_for", "remove_comments", "add_docstrings"]
    assert out == augment.augment(CORPUS, applied, random.Random(3))[0]   # deterministic
    _, applied = augment.augment("x = 1\n", list(augment.AUGMENTATIONS), random.Random(0))
    assert applied == []
    assert augment.apply("for_to_while", "def broken(:\n", random.Random(0)) is None


# --------------------------------------------------------------------------- bugs

# One tiny function per kind, with a single site, and calls that expose the change.
BUG_CASES = {
    "swap_operator": ("def f(a, b):\n    return a + b\n", ["f(2, 3)"]),
    "off_by_one": ("def f(xs):\n    return [xs[i] for i in range(len(xs))]\n", ["f([1, 2, 3])"]),
    "wrong_variable": ("def f(a, b):\n    return a * 2\n", ["f(1, 5)"]),
    "drop_return": ("def f(x):\n    y = x + 1\n    return y\n", ["f(1)"]),
    "flip_comparison": ("def f(a, b):\n    return a < b\n", ["f(1, 2)"]),
    "negate_condition": ("def f(x):\n    if x:\n        return 'yes'\n    return 'no'\n", ["f(1)"]),
    "swap_arguments": ("def f(a, b):\n    return pow(a, b)\n", ["f(2, 3)"]),
    "wrong_constant": ("def f(x):\n    return x * 3\n", ["f(2)"]),
}


def test_every_bug_kind_changes_behaviour_when_executed():
    assert set(BUG_CASES) == set(augment.BUGS)
    programs, buggy_sources = [], {}
    for kind, (source, calls) in BUG_CASES.items():
        buggy = augment.apply(kind, source, random.Random(1))
        assert buggy is not None and ast.dump(ast.parse(buggy)) != ast.dump(ast.parse(source)), kind
        buggy_sources[kind] = buggy
        programs += [execution.probe_program(source, calls), execution.probe_program(buggy, calls)]
    results = run_programs(programs, execution.default_limits(), workers=2, progress=False)
    assert all(r.passed for r in results)
    for i, kind in enumerate(BUG_CASES):
        original, buggy = results[2 * i].stdout, results[2 * i + 1].stdout
        assert original != buggy, (kind, buggy_sources[kind], original)


def test_inject_bug_api():
    source = CORPUS
    buggy, kind = augment.inject_bug(source, random.Random(5))
    assert kind in augment.BUGS and ast.dump(ast.parse(buggy)) != ast.dump(ast.parse(source))
    assert augment.inject_bug(source, random.Random(5)) == (buggy, kind)
    for only in augment.BUGS:
        drawn = augment.inject_bug(source, random.Random(0), kinds=[only])
        assert drawn is not None and drawn[1] == only
    # Bugs go inside function bodies: module-level code and defaults are never touched.
    assert augment.inject_bug("x = 1 + 2\ndef f(a=1 + 2):\n    pass\n", random.Random(0)) is None
    with pytest.raises(ValueError, match="unknown bug kinds"):
        augment.inject_bug(source, random.Random(0), kinds=["typo"])


def test_drop_return_deletes_the_final_return_and_keeps_formatting():
    source = "def f(x):\n    y = x  +  1   # spaced\n    return y\n"
    assert augment.apply("drop_return", source, random.Random(0)) == "def f(x):\n    y = x  +  1   # spaced\n"
    swapped = augment.apply("swap_operator", source, random.Random(0))
    assert swapped == "def f(x):\n    y = x  -  1   # spaced\n    return y\n"


# --------------------------------------------------------------------------- real code

def _stdlib_sample(n=100, max_bytes=4000):
    root = stdlib_root()
    files = [f for f in list_source_files(root) if f.stat().st_size <= max_bytes][:n]
    out = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
            ast.parse(text)
        except (UnicodeDecodeError, SyntaxError, ValueError):
            continue
        out.append((f.relative_to(root).as_posix(), text))
    return out


def _erase_names(tree):
    """The AST with every name a local renaming may touch blanked out."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            node.id = "_"
        elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
            node.name = "_"
    return ast.dump(tree)


def test_all_transforms_on_stdlib_files_parse_and_keep_structure():
    """Sorted stdlib files (<= 4 kB, the first 100): no crash, every output parses, keeps its
    functions and classes, and each transform keeps the AST-level structure it promises."""
    sample = _stdlib_sample()
    assert len(sample) >= 90
    applied = {name: 0 for name in augment.AUGMENTATIONS}
    bug_kinds = set()
    for index, (path, source) in enumerate(sample):
        original = ast.parse(source)
        for name in augment.AUGMENTATIONS:
            out = augment.apply(name, source, random.Random(index))
            if out is None:
                continue
            applied[name] += 1
            tree = ast.parse(out)
            assert _outline(out) == _outline(source), (path, name)
            if name in ("remove_comments", "add_comments"):
                assert ast.dump(tree) == ast.dump(original), (path, name)
            elif name in ("remove_docstrings", "add_docstrings"):
                assert style.strip_docstrings_ast(tree) == style.strip_docstrings_ast(ast.parse(source)), (path, name)
            elif name == "rename_variables":
                assert _erase_names(tree) == _erase_names(ast.parse(source)), path
        kind = augment.BUGS[index % len(augment.BUGS)]
        drawn = augment.inject_bug(source, random.Random(index), kinds=[kind])
        if drawn is not None:
            bug_kinds.add(kind)
            assert ast.dump(ast.parse(drawn[0])) != ast.dump(original) and _outline(drawn[0]) == _outline(source)
    # Every transform that is common in real code fired on a fair share of the files.
    minimum = {"rename_variables": 30, "remove_comments": 50, "add_comments": 50, "remove_docstrings": 50,
               "add_docstrings": 40, "for_to_while": 10, "swap_if_else": 20, "fstring_to_format": 5,
               "format_to_fstring": 3, "while_to_for": 0}
    assert {n: applied[n] >= minimum[n] for n in applied} == {n: True for n in applied}, applied
    assert bug_kinds == set(augment.BUGS)
