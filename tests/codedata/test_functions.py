"""Tests for codejax.codedata.functions: mining functions into instruction/input/output rows."""

import ast
import json

import pytest

from codejax.codedata import functions as F

CRAFTED = '''\
import functools


def lcs(s1: str, s2: str) -> int:
    """Return the length of the longest common subsequence.

    Classic O(m*n) dynamic programme; this paragraph is not in the instruction.
    """
    m, n = len(s1), len(s2)
    dp = [[0] * (n + 1) for _ in range(m + 1)]
    return dp[m][n]


async def fetch_all(urls, session):
    """Fetch every URL concurrently and return the bodies."""
    return [await session.get(u) for u in urls]


class Stack:
    """A last-in, first-out container."""

    def push(self, item):
        """Push an item onto the top of the stack."""
        self._items.append(item)
        if len(self._items) > 10:
            raise OverflowError("stack is full")


@functools.lru_cache(maxsize=None)
@staticmethod
def combine(first: int,
            second: int = 2,
            *rest: int) -> int:  # a comment after the colon
    """Add all of the given numbers together."""
    return first + second + sum(rest)


def undocumented(x):
    return x + 1


def only_docstring():
    """This function has nothing but a docstring."""


def outer(values):
    """Double every value using a nested helper."""
    def helper(v):
        """Double a single value for the caller."""
        return 2 * v
    return [helper(v) for v in values]
'''


@pytest.fixture(scope="module")
def crafted():
    rows, skipped = F.mine_source(CRAFTED, "pkg/crafted.py")
    return {r["qualname"]: r for r in rows}, skipped


def test_top_level_function_exact_strings(crafted):
    row = crafted[0]["lcs"]
    assert row["instruction"] == ("Write a Python function `lcs`: "
                                  "Return the length of the longest common subsequence.")
    assert row["input"] == "def lcs(s1: str, s2: str) -> int:"
    assert row["output"] == ("    m, n = len(s1), len(s2)\n"
                             "    dp = [[0] * (n + 1) for _ in range(m + 1)]\n"
                             "    return dp[m][n]")
    assert (row["path"], row["name"], row["lineno"]) == ("pkg/crafted.py", "lcs", 4)


def test_async_function(crafted):
    row = crafted[0]["fetch_all"]
    assert row["input"] == "async def fetch_all(urls, session):"
    assert row["output"] == "    return [await session.get(u) for u in urls]"
    assert row["instruction"].startswith("Write a Python async function `fetch_all`: ")


def test_method_is_dedented_and_names_its_class(crafted):
    row = crafted[0]["Stack.push"]
    assert row["name"] == "push"
    assert row["input"] == "def push(self, item):"
    assert row["output"] == ("    self._items.append(item)\n"
                             "    if len(self._items) > 10:\n"
                             "        raise OverflowError(\"stack is full\")")
    assert row["instruction"] == ("Write the method `push` of the Python class `Stack`: "
                                  "Push an item onto the top of the stack.")


def test_multiline_signature_without_decorators_or_trailing_comment(crafted):
    row = crafted[0]["combine"]
    assert row["input"] == ("def combine(first: int,\n"
                            "            second: int = 2,\n"
                            "            *rest: int) -> int:")
    assert row["output"] == "    return first + second + sum(rest)"
    assert row["lineno"] == CRAFTED.split("\n").index("def combine(first: int,") + 1


def test_skips_and_nested_functions(crafted):
    rows, skipped = crafted
    # `helper` is nested in `outer`: not mined on its own (it may close over the
    # parent's locals) but kept verbatim inside the parent's output.
    assert sorted(rows) == ["Stack.push", "combine", "fetch_all", "lcs", "outer"]
    assert "def helper(v):" in rows["outer"]["output"]
    assert skipped == {F.NO_DOCSTRING: 1, F.EMPTY_BODY: 1}


def test_every_pair_round_trips_without_its_docstring(crafted):
    tree = ast.parse(CRAFTED)
    docstrings = {n.name: ast.get_docstring(n) for n in ast.walk(tree)
                  if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    for row in crafted[0].values():
        fn = ast.parse(row["input"] + "\n" + row["output"]).body[0]
        assert fn.name == row["name"]
        assert row["input"].lstrip().startswith(("def ", "async def "))
        assert docstrings[row["name"]] not in row["output"]


def test_method_keeps_multiline_string_contents():
    src = ('class Page:\n'
           '    def render(self, body):\n'
           '        """Render the page around the given body."""\n'
           "        html = '''\\\n"
           '<html>\n'
           '  <body>%s</body>\n'
           "</html>'''\n"
           '        return html % body\n')
    (row,) = F.mine_functions(src)
    assert row["output"] == ("    html = '''\\\n<html>\n  <body>%s</body>\n</html>'''\n"
                             "    return html % body")
    ns = {}
    exec(row["input"] + "\n" + row["output"], ns)
    assert ns["render"](None, "x") == "<html>\n  <body>x</body>\n</html>"


def test_stubs_short_docstrings_long_bodies_and_line_endings():
    src = ('def stub(x):\n    """Not implemented in the base class."""\n    raise NotImplementedError\n'
           'def dots(x):\n    """Protocol method with an ellipsis body."""\n    ...\n'
           'def short(x):\n    """Short."""\n    return x\n'
           'def long(x):\n    """Add one to x many times over."""\n' + '    x += 1\n' * 5 + '    return x\n')
    assert F.mine_source(src, max_body_lines=5)[1] == {
        F.STUB_BODY: 2, F.SHORT_DOCSTRING: 1, F.TOO_LONG: 1}
    (row,) = F.mine_functions("\ufeff" + src.replace("\n", "\r\n"), max_body_lines=6)
    assert row["name"] == "long" and "\r" not in row["output"] and row["lineno"] == 10
    with pytest.raises(SyntaxError):
        F.mine_functions("def broken(:\n    pass\n")


def test_stdlib_slice():
    rows, stats = F.mine_tree(F.stdlib_root(), max_files=30)
    assert stats.files_read + len(stats.files_skipped) == 30
    assert stats.pairs == len(rows) > 30
    assert stats.functions_seen == stats.pairs + sum(stats.skipped_by_reason.values())
    for row in rows:
        assert set(row) >= {"instruction", "input", "output", "path", "name", "lineno"}
        assert not row["path"].startswith("/")  # root-relative: stable across machines
        ast.parse(row["input"] + "\n" + row["output"])
        assert len(row["output"].split("\n")) <= F.DEFAULT_MAX_BODY_LINES


def test_bad_files_are_skipped_and_counted(tmp_path):
    (tmp_path / "good.py").write_text('def f(x):\n    """Return x plus one, always."""\n    return x + 1\n')
    (tmp_path / "bad_syntax.py").write_text("def f(:\n")
    (tmp_path / "latin1.py").write_bytes(b"# caf\xe9\nx = 1\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_g.py").write_text('def g():\n    """Return two, as a test."""\n    return 2\n')
    rows, stats = F.mine_tree(tmp_path)
    assert [r["path"] for r in rows] == ["good.py"]
    assert stats.files_read == 1 and stats.pairs == 1
    reasons = dict(stats.files_skipped)
    assert sorted(reasons) == ["bad_syntax.py", "latin1.py"]
    assert reasons["bad_syntax.py"].startswith("syntax error")
    assert reasons["latin1.py"].startswith("not UTF-8")
    assert [r["path"] for r in F.mine_tree(tmp_path, include_tests=True)[0]] == ["good.py", "tests/test_g.py"]


def test_write_jsonl_round_trips(tmp_path, crafted):
    rows = list(crafted[0].values())
    out = F.write_jsonl(rows, tmp_path / "sub" / "pairs.jsonl")
    assert [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] == rows
    assert not list(out.parent.glob("*.tmp"))


def test_split_by_file():
    rows = [{"path": f"mod{i}.py", "i": j} for i in range(400) for j in range(3)]
    train, held = F.split_by_file(rows, eval_fraction=0.2, seed=7)
    train_paths, held_paths = {r["path"] for r in train}, {r["path"] for r in held}
    assert not train_paths & held_paths
    assert len(train) + len(held) == len(rows)
    assert 0.13 < len(held_paths) / 400 < 0.27
    assert F.split_by_file(rows, 0.2, seed=7) == (train, held)
    assert {r["path"] for r in F.split_by_file(rows, 0.2, seed=8)[1]} != held_paths
    assert F.split_by_file(rows, 0.0)[1] == [] and F.split_by_file(rows, 1.0)[0] == []
    with pytest.raises(ValueError):
        F.split_by_file(rows, 1.5)
    with pytest.raises(KeyError, match="row 0"):
        F.split_by_file([{"instruction": "x"}], 0.5)
