"""The functions of one source file, as the task builders see them.

:func:`extract_functions` finds the same definitions as
:func:`codejax.codedata.functions.mine_source` (module-level functions, including those
under module-level ``if``/``try``/``with``, and methods of classes at any depth; nested
functions are part of their parent) and attaches to each the Alpaca row ``mine_source``
made of it, when it made one. The text of each function (decorators included) is cut out
of the file and dedented to column 0; a cut whose AST differs from the original node (a
multi-line string less indented than the code, say) is skipped and counted.

Difficulty, a float in [0, 1] attached to every row built from a function::

    difficulty = 0.5 * min(1, body_lines / 40) + 0.5 * min(1, (complexity - 1) / 10)

``body_lines`` counts the non-blank lines of the body after the docstring and
``complexity`` is McCabe's cyclomatic complexity (1 + branch points: ``if``/``elif``,
conditional expressions, loops, ``except`` clauses, ``match`` cases, extra operands of
``and``/``or``, comprehension ``for``/``if`` clauses, ``assert``). A 5-line function with no
branches scores about 0.06; a 40-line function with 11 branch points scores 1.0.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import inspect
import io
import re
import tokenize

from codejax.codedata.functions import iter_defs, mine_source

_FuncDef = (ast.FunctionDef, ast.AsyncFunctionDef)
_BRANCHES = (ast.If, ast.IfExp, ast.For, ast.AsyncFor, ast.While, ast.ExceptHandler, ast.Assert,
             ast.match_case, ast.comprehension)
_LINES = re.compile(r"(?<=\n)")


@dataclasses.dataclass(frozen=True)
class Function:
    """One function or method. ``source`` ends with a newline and starts at column 0."""

    name: str
    qualname: str
    lineno: int                 # of the ``def`` line in the file
    source: str                 # decorators, signature, docstring, body
    docstring: str | None       # cleaned (``ast.get_docstring``)
    header_lines: int           # lines of ``source`` up to the docstring's end (or the signature's)
    is_method: bool
    body_lines: int
    complexity: int
    difficulty: float
    mined: dict | None          # the mine_source row (instruction/input/output), if any

    @property
    def module_level(self) -> bool:
        """Callable by name from module scope (so the sandbox can run it)."""
        return not self.is_method

    def lines(self) -> list[str]:
        """``source`` split into lines that keep their ``\\n``."""
        return split_lines(self.source)


def split_lines(text: str) -> list[str]:
    """Lines keeping their ``\\n``; only ``\\n`` splits (str.splitlines would also split on
    form feeds and U+2028, which Python does not count as line breaks)."""
    return [line for line in _LINES.split(text) if line]


def normalise_newlines(text: str) -> str:
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def complexity(node: ast.AST) -> int:
    """McCabe cyclomatic complexity of a function node (see the module doc)."""
    score = 1
    for child in ast.walk(node):
        if isinstance(child, _BRANCHES):
            score += 1 + (len(child.ifs) if isinstance(child, ast.comprehension) else 0)
        elif isinstance(child, ast.BoolOp):
            score += len(child.values) - 1
    return score


def difficulty(body_lines: int, cyclomatic: int) -> float:
    return round(0.5 * min(1.0, body_lines / 40) + 0.5 * min(1.0, (cyclomatic - 1) / 10), 3)


def module_names(tree: ast.Module) -> set[str]:
    """Names bound at module level (defs, classes, assignments, imports) in any module-level
    block, but not inside function or class bodies."""
    names: set[str] = set()
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            todo.extend(node.decorator_list)  # decorators run at module level (walrus aside)
            continue
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        todo.extend(ast.iter_child_nodes(node))
    return names


def _docstring_nodes(node: ast.AST) -> list[ast.Constant]:
    out = []
    for n in ast.walk(node):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body:
            first = n.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                out.append(first.value)
    return out


def _comparable(node: ast.AST) -> str:
    """``ast.dump`` with docstrings as ``inspect.cleandoc`` reads them (``node`` is left as it was)."""
    docs = _docstring_nodes(node)
    saved = [doc.value for doc in docs]
    try:
        for doc in docs:
            # cleandoc keeps whitespace-only lines, such as the indent before a closing quote.
            doc.value = "\n".join(line.rstrip() for line in inspect.cleandoc(doc.value).split("\n")).strip()
        return ast.dump(node)
    finally:
        for doc, value in zip(docs, saved):
            doc.value = value


def _frozen_lines(segment: list[str], docstring_lines: set[int]) -> set[int]:
    """Indices (in ``segment``) of lines inside multi-line strings other than docstrings.

    Those lines are part of a string's value, so dedenting them would change the program;
    a docstring's inner lines may move, since its meaning is its ``cleandoc`` form.
    """
    frozen: set[int] = set()
    try:
        for tok in tokenize.generate_tokens(io.StringIO("".join(segment)).readline):
            if tok.type == tokenize.STRING and tok.end[0] > tok.start[0] and tok.start[0] - 1 not in docstring_lines:
                frozen.update(range(tok.start[0], tok.end[0]))   # 0-based indices of the lines after the first
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass  # the AST comparison below rejects whatever this misses
    return frozen


def _cut(lines: list[str], node: ast.AST) -> str | None:
    """The node's text (decorators included) moved to column 0, or None if that changes it.

    Each line loses up to the def's indentation in leading whitespace, except lines inside
    multi-line strings that are not docstrings. The cut must parse to the same AST, with
    docstrings compared after ``inspect.cleandoc``.
    """
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    segment = lines[first - 1:node.end_lineno]
    width = node.col_offset
    if width:
        docstring_lines = {d.lineno - first for d in _docstring_nodes(node)}
        frozen = _frozen_lines(segment, docstring_lines)
        moved = []
        for i, line in enumerate(segment):
            n = 0
            while i not in frozen and n < width and n < len(line) and line[n] in " \t\x0c":
                n += 1
            moved.append(line[n:])
        segment = moved
    text = "".join(segment)
    if not text.endswith("\n"):
        text += "\n"
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError):
        return None
    if len(tree.body) != 1 or _comparable(tree.body[0]) != _comparable(node):
        return None
    return text


def extract_functions(content: str, path: str, max_body_lines: int) -> tuple[list[Function], collections.Counter]:
    """Every function and method of ``content`` (see the module doc), and skip counts.

    Raises SyntaxError/ValueError if ``content`` does not parse. Functions whose body is
    longer than ``max_body_lines`` are skipped as ``too_long``; cuts that fail as ``cut_failed``.
    """
    content = normalise_newlines(content)
    tree = ast.parse(content)
    lines = split_lines(content)
    mined_rows, _ = mine_source(content, path, max_body_lines)
    mined = {row["lineno"]: row for row in mined_rows}
    out, skipped = [], collections.Counter()
    for node, classes in iter_defs(tree):
        text = _cut(lines, node)
        if text is None:
            skipped["cut_failed"] += 1
            continue
        local = ast.parse(text).body[0]
        doc = ast.get_docstring(local, clean=True)
        has_doc = doc is not None
        header = local.body[0].end_lineno if has_doc else local.body[0].lineno - 1
        if local.body[0].lineno == local.lineno or (has_doc and len(local.body) == 1):
            skipped["one_line_or_docstring_only"] += 1
            continue
        body = [line for line in text.split("\n")[header:] if line.strip()]
        if len(body) > max_body_lines:
            skipped["too_long"] += 1
            continue
        cyclomatic = complexity(local)
        out.append(Function(
            name=node.name, qualname=".".join(classes + (node.name,)), lineno=node.lineno, source=text,
            docstring=doc, header_lines=header, is_method=bool(classes), body_lines=len(body),
            complexity=cyclomatic, difficulty=difficulty(len(body), cyclomatic), mined=mined.get(node.lineno)))
    return out, skipped


def module_program(content: str) -> str:
    """``content`` made safe to execute as the sandbox's ``__main__``.

    ``__name__`` is set to something other than ``"__main__"`` so a script's main block does
    not run; the assignment goes after any ``from __future__`` imports, which must come first.
    """
    content = normalise_newlines(content)
    tree = ast.parse(content)
    after = 0
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
            after = stmt.end_lineno
    lines = split_lines(content)
    guard = "__name__ = '__codejax_sandbox__'\n"
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return "".join(lines[:after]) + guard + "".join(lines[after:])
