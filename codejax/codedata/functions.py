"""Mine Python source files into Alpaca-style instruction-tuning pairs.

Every documented function becomes one row in the seed document's format::

    {"instruction": "Write a Python function `lcs`: Return the length of the LCS.",
     "input": "def lcs(s1: str, s2: str) -> int:",
     "output": "    m, n = len(s1), len(s2)\\n    ..."}

plus the metadata fields ``path``, ``name``, ``qualname`` and ``lineno``, which the
loader ignores but which make every row traceable to its source and let
:func:`split_by_file` hold out whole modules. Training uses prompt = instruction + input
and completion = output, so the docstring is deliberately *not* in the output: the model
must write the code from the description, not copy it.

What is mined, and why:

* Module-level functions, including those under module-level ``if``/``try``/``with``
  blocks (the stdlib defines platform variants that way), and methods of classes at any
  class-nesting depth. Nested functions (defined inside another function) are **not**
  mined on their own: they usually close over the enclosing function's locals, so their
  body alone is not a self-contained task, and they already appear verbatim inside their
  parent's output.
* Instructions come from the docstring's first paragraph, whitespace-normalised and
  prefixed with "Write a Python function `name`: " (methods: "Write the method `name` of
  the Python class `Cls`: "; ``async`` is named when it applies). Stdlib summaries are
  mostly imperative ("Return the ..."), so the prefixed sentence reads as an instruction.
* ``input`` is the exact signature text, decorators excluded, cut right after the
  signature's colon and dedented so ``def`` starts at column 0; ``output`` is the rest of
  the body after the docstring, dedented by the same amount (a method's body lines start
  at 4 spaces in ordinarily indented code). Lines inside multi-line string literals are
  never dedented, because that would change the program.

Every pair is verified by re-parsing ``input + "\\n" + output`` and comparing the AST of
the signature and body with the original (positions ignored), so a pair that parses but
means something different is rejected too. Skips are counted per reason, never silent.

Only the stdlib is used: files are found by :mod:`codejax.corpus`, the walker every
corpus shares.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import json
import os
import tokenize
from collections.abc import Iterable, Iterator
from pathlib import Path

from codejax.codedata.splits import hash_score
from codejax.corpus import list_source_files, read_source, stdlib_root

DEFAULT_MAX_BODY_LINES = 60
MIN_DOCSTRING_WORDS = 3

# Skip reasons, as counted in MiningStats.skipped_by_reason.
NO_DOCSTRING = "no_docstring"
SHORT_DOCSTRING = "short_docstring"        # fewer than MIN_DOCSTRING_WORDS words
INLINE_BODY = "inline_body"                # docstring on the def's own line
DOCSTRING_SHARES_LINE = "docstring_shares_line"  # '"""doc"""; x = 1'
EMPTY_BODY = "empty_body"                  # only the docstring
STUB_BODY = "stub_body"                    # only pass / ... / raise NotImplementedError
TOO_LONG = "too_long"                      # output longer than max_body_lines
ROUNDTRIP_FAILED = "roundtrip_failed"      # re-parse failed or changed the AST

_FuncDef = (ast.FunctionDef, ast.AsyncFunctionDef)
# Token types whose text may span lines; their inner lines must keep their indentation.
_STRING_TOKENS = frozenset(t for t in (tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", None)) if t)
_INDENT_CHARS = " \t\x0c"


@dataclasses.dataclass
class MiningStats:
    """What :func:`mine_tree` read, skipped and produced; the counts always add up.

    ``files_read + len(files_skipped)`` is the number of files considered, and
    ``functions_seen == pairs + sum(skipped_by_reason.values())``.
    """

    files_read: int = 0
    files_skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    functions_seen: int = 0
    pairs: int = 0
    skipped_by_reason: dict[str, int] = dataclasses.field(default_factory=dict)


def iter_defs(node: ast.AST, classes: tuple[str, ...] = ()) -> Iterator[tuple[ast.AST, tuple[str, ...]]]:
    """Yield ``(def node, enclosing class names)`` without descending into function bodies."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, _FuncDef):
            yield child, classes
        elif isinstance(child, ast.ClassDef):
            yield from iter_defs(child, classes + (child.name,))
        elif isinstance(child, (ast.stmt, ast.excepthandler, ast.match_case)):
            yield from iter_defs(child, classes)


def docstring_summary(docstring: str) -> str:
    """First paragraph of a cleaned docstring, collapsed to single spaces."""
    paragraph = []
    for line in docstring.strip().split("\n"):
        if not line.strip():
            break
        paragraph.append(line)
    return " ".join(" ".join(paragraph).split())


def _instruction(name: str, classes: tuple[str, ...], is_async: bool, summary: str) -> str:
    kind = "async " if is_async else ""
    if classes:
        return f"Write the {kind}method `{name}` of the Python class `{'.'.join(classes)}`: {summary}"
    return f"Write a Python {kind}function `{name}`: {summary}"


def _readline(lines: list[str], first: int, last: int):
    """A tokenize ``readline`` over lines[first:last+1], returning "" at the end as it must."""
    segment = iter(lines[first:last + 1])
    return lambda: next((line + "\n" for line in segment), "")


def _signature_end(lines: list[str], first: int, last: int) -> tuple[int, int] | None:
    """(line index, column) just past the signature's top-level ':' within lines[first:last+1].

    Tokenizing (rather than searching for ':') skips colons in lambdas, slices, strings
    and comments. Tokenizing stops at the colon, so an unterminated docstring further on
    in the segment is never reached.
    """
    depth = 0
    try:
        for tok in tokenize.generate_tokens(_readline(lines, first, last)):
            if tok.type != tokenize.OP:
                continue
            if tok.string in "([{":
                depth += 1
            elif tok.string in ")]}":
                depth -= 1
            elif tok.string == ":" and depth == 0:
                return first + tok.end[0] - 1, tok.end[1]
    except (tokenize.TokenError, SyntaxError):
        pass
    return None


def _string_interior_lines(lines: list[str], first: int, last: int) -> set[int]:
    """Indices of lines that continue a multi-line string token within lines[first:last+1]."""
    inner: set[int] = set()
    try:
        for tok in tokenize.generate_tokens(_readline(lines, first, last)):
            if tok.type in _STRING_TOKENS and tok.end[0] > tok.start[0]:
                inner.update(range(first + tok.start[0], first + tok.end[0]))
    except (tokenize.TokenError, SyntaxError):
        pass  # the round-trip check rejects anything this leaves wrongly dedented
    return inner


def _has_multiline_string(node: ast.AST, docstring_node: ast.AST) -> bool:
    return any(
        isinstance(n, (ast.Constant, ast.JoinedStr)) and n is not docstring_node
        and n.end_lineno > n.lineno and (isinstance(n, ast.JoinedStr) or isinstance(n.value, (str, bytes)))
        for n in ast.walk(node))


def _dedent(lines: list[str], indices: range, width: int, keep: set[int]) -> list[str]:
    """Strip up to ``width`` leading indent chars from each line not in ``keep``.

    Continuation lines inside brackets may be indented less than the def; stripping only
    what is there is harmless for them, since indentation inside brackets is free.
    """
    out = []
    for i in indices:
        line = lines[i]
        if i not in keep and width:
            n = 0
            while n < width and n < len(line) and line[n] in _INDENT_CHARS:
                n += 1
            line = line[n:]
        out.append(line)
    return out


def _is_stub(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Pass):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and stmt.value.value is Ellipsis:
        return True
    if isinstance(stmt, ast.Raise) and stmt.exc is not None:
        exc = stmt.exc.func if isinstance(stmt.exc, ast.Call) else stmt.exc
        return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
    return False


def _same_function(original: ast.AST, text: str) -> bool:
    """True if ``text`` parses to a def with the same arguments and returns, whose body is
    the original's body minus its docstring."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError):
        return False
    if len(tree.body) != 1 or type(tree.body[0]) is not type(original):
        return False
    new = tree.body[0]

    def key(fn: ast.AST, body: list[ast.stmt]) -> tuple[str, ...]:
        return (fn.name, ast.dump(fn.args), ast.dump(fn.returns) if fn.returns else "",
                *(ast.dump(p) for p in getattr(fn, "type_params", ())),
                *(ast.dump(s) for s in body))

    # The whole re-parsed body is the output: a leading string there is the original's
    # second statement, not a docstring to drop.
    return key(new, new.body) == key(original, original.body[1:])


def _mine_one(node: ast.AST, classes: tuple[str, ...], lines: list[str], path: str,
              max_body_lines: int) -> tuple[dict | None, str | None]:
    """Return ``(row, None)`` or ``(None, skip_reason)`` for one def node."""
    docstring = ast.get_docstring(node, clean=True)
    if docstring is None:
        return None, NO_DOCSTRING
    summary = docstring_summary(docstring)
    if len(summary.split()) < MIN_DOCSTRING_WORDS:
        return None, SHORT_DOCSTRING
    doc_node, rest = node.body[0], node.body[1:]
    if doc_node.lineno == node.lineno:
        return None, INLINE_BODY
    if not rest:
        return None, EMPTY_BODY
    if all(_is_stub(s) for s in rest):
        return None, STUB_BODY
    if rest[0].lineno == doc_node.end_lineno:
        return None, DOCSTRING_SHARES_LINE

    first, width = node.lineno - 1, node.col_offset  # leading whitespace: bytes == chars
    end = _signature_end(lines, first, doc_node.lineno - 1)
    if end is None:
        return None, ROUNDTRIP_FAILED
    colon_line, colon_col = end
    if colon_line == doc_node.lineno - 1:  # multi-line signature, docstring after its colon
        return None, INLINE_BODY

    keep = (_string_interior_lines(lines, first, node.end_lineno - 1)
            if width and _has_multiline_string(node, doc_node) else set())
    sig = _dedent(lines, range(first, colon_line + 1), width, keep)
    sig[-1] = sig[-1][:len(sig[-1]) - (len(lines[colon_line]) - colon_col)]
    body = _dedent(lines, range(doc_node.end_lineno, node.end_lineno), width, keep)
    while body and not body[0].strip():
        body.pop(0)
    if len(body) > max_body_lines:
        return None, TOO_LONG
    signature, output = "\n".join(sig), "\n".join(body)
    if not _same_function(node, signature + "\n" + output):
        return None, ROUNDTRIP_FAILED
    return {
        "instruction": _instruction(node.name, classes, isinstance(node, ast.AsyncFunctionDef), summary),
        "input": signature,
        "output": output,
        "path": path,
        "name": node.name,
        "qualname": ".".join(classes + (node.name,)),
        "lineno": node.lineno,
    }, None


def mine_source(source: str, path: str = "<string>",
                max_body_lines: int = DEFAULT_MAX_BODY_LINES) -> tuple[list[dict], collections.Counter]:
    """Like :func:`mine_functions`, also returning a Counter of skip reasons per function.

    Raises ``SyntaxError`` (or ``ValueError`` for NUL bytes) if ``source`` does not parse.
    """
    if max_body_lines < 1:
        raise ValueError(f"max_body_lines must be >= 1, got {max_body_lines}")
    # Normalise newlines ourselves: str.splitlines would also split on form feeds and
    # U+2028, which Python does not count as line breaks, misaligning ast line numbers.
    source = source.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    tree = ast.parse(source, filename=path)
    lines = source.split("\n")
    rows, skipped = [], collections.Counter()
    for node, classes in iter_defs(tree):
        row, reason = _mine_one(node, classes, lines, path, max_body_lines)
        if row is None:
            skipped[reason] += 1
        else:
            rows.append(row)
    return rows, skipped


def mine_functions(source: str, path: str = "<string>",
                   max_body_lines: int = DEFAULT_MAX_BODY_LINES) -> list[dict]:
    """Instruction/input/output rows for the documented functions and methods in ``source``.

    Rows come in source order; see the module docstring for what is mined and skipped.
    """
    return mine_source(source, path, max_body_lines)[0]


def mine_tree(root: str | os.PathLike | None = None, max_files: int | None = None,
              include_tests: bool = False,
              max_body_lines: int = DEFAULT_MAX_BODY_LINES) -> tuple[list[dict], MiningStats]:
    """Mine every ``.py`` file under ``root`` (default: the stdlib).

    ``max_files`` caps the files *considered* (in sorted order), so skipped files count
    toward it and the same slice is mined on every machine. Row ``path`` fields are
    root-relative POSIX paths, which keeps :func:`split_by_file` identical across
    machines whose stdlib lives in different directories. Unreadable, non-UTF-8 and
    unparsable files are recorded in ``stats.files_skipped`` with the reason.
    """
    if max_files is not None and max_files < 1:
        raise ValueError(f"max_files must be >= 1 or None, got {max_files}")
    root = stdlib_root() if root is None else Path(root)
    files = list_source_files(root, include_tests=include_tests)[:max_files]
    stats, rows, reasons = MiningStats(), [], collections.Counter()
    for file in files:
        rel = file.relative_to(root).as_posix()
        text, why = read_source(file)
        if text is None:
            stats.files_skipped.append((rel, why))
            continue
        try:
            mined, skipped = mine_source(text, rel, max_body_lines)
        except SyntaxError as e:
            stats.files_skipped.append((rel, f"syntax error: {e.msg} (line {e.lineno})"))
            continue
        except (ValueError, RecursionError) as e:
            stats.files_skipped.append((rel, f"unparsable: {e}"))
            continue
        stats.files_read += 1
        stats.functions_seen += len(mined) + sum(skipped.values())
        reasons.update(skipped)
        rows.extend(mined)
    stats.pairs = len(rows)
    stats.skipped_by_reason = dict(sorted(reasons.items()))
    return rows, stats


def write_jsonl(rows: Iterable[dict], path: str | os.PathLike) -> Path:
    """Write one JSON object per line, atomically (a crash never leaves a half file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def split_by_file(rows: Iterable[dict], eval_fraction: float, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """``(train, eval)`` with every source file wholly on one side.

    Functions from one module share helpers, names and idioms, so a per-row split would
    leak near-duplicates into eval. Each file goes to eval iff its hash score is below
    ``eval_fraction``: the split is deterministic per seed, stable when files are added,
    and the eval share of *files* (not rows) is about ``eval_fraction``.
    """
    if not 0.0 <= eval_fraction <= 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1], got {eval_fraction}")
    train, held_out = [], []
    for i, row in enumerate(rows):
        if "path" not in row:
            raise KeyError(f"row {i} has no 'path' field; split_by_file needs it")
        (held_out if hash_score(row["path"], seed) < eval_fraction else train).append(row)
    return train, held_out
