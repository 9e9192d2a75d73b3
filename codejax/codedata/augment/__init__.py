"""AST-based augmentation: style and semantics-preserving transforms, and bug injection.

    rng = random.Random(0)
    new = augment.apply("for_to_while", source, rng)          # None: nothing to rewrite
    new, applied = augment.augment(source, ["rename_variables", "remove_comments"], rng)
    buggy, kind = augment.inject_bug(source, rng) or (None, None)
    augment.check_equivalent(source, new, ["f(3)", "f(0)"])  # runs both in the sandbox

Transforms (:data:`AUGMENTATIONS`), each in its own module with its guarantees documented:

=====================  ============================================================
``rename_variables``   locals renamed (never parameters, globals, attributes); proven
                       by bytecode comparison (:mod:`~codejax.codedata.augment.rename`)
``remove_comments``    AST unchanged (:mod:`~codejax.codedata.augment.style`)
``add_comments``       template comments; AST unchanged
``remove_docstrings``  AST equals the original minus its docstrings
``add_docstrings``     template docstrings for undocumented functions; likewise
``for_to_while``       range loops and the iterator protocol (:mod:`~codejax.codedata.augment.loops`)
``while_to_for``       counting loops, only where provably equivalent
``swap_if_else``       ``if c: A else: B`` -> ``if not c: B else: A``
``fstring_to_format``  f-strings -> ``str.format`` (:mod:`~codejax.codedata.augment.strings`)
``format_to_fstring``  ``str.format`` on literals -> f-strings
=====================  ============================================================

Bugs (:data:`BUGS`, :mod:`~codejax.codedata.augment.bugs`): ``swap_operator``, ``off_by_one``,
``wrong_variable``, ``drop_return``, ``flip_comparison``, ``negate_condition``,
``swap_arguments``, ``wrong_constant``.

Every result of :func:`apply` and :func:`inject_bug` parses, and has the same functions
and classes (by name, in order) as the input; anything else is treated as "not
applicable". Transforms are deterministic given the ``random.Random`` they are handed, and
everything here is a module-level function, so it pickles into worker processes.
"""

from __future__ import annotations

import ast
import random
from collections.abc import Callable, Sequence

import libcst as cst

from codejax.codedata.augment import bugs, cst_tools, loops, rename, strings, style
from codejax.codedata.augment.execution import check_equivalent

__all__ = ["AUGMENTATIONS", "BEHAVIOURAL", "BUGS", "apply", "augment", "check_equivalent", "inject_bug",
           "same_outline"]

_TRANSFORMS: dict[str, Callable[[str, random.Random], str | None]] = {
    "rename_variables": rename.rename_variables,
    "remove_comments": style.remove_comments,
    "add_comments": style.add_comments,
    "remove_docstrings": style.remove_docstrings,
    "add_docstrings": style.add_docstrings,
    "for_to_while": loops.for_to_while,
    "while_to_for": loops.while_to_for,
    "swap_if_else": loops.swap_if_else,
    "fstring_to_format": strings.fstring_to_format,
    "format_to_fstring": strings.format_to_fstring,
}
AUGMENTATIONS: tuple[str, ...] = tuple(_TRANSFORMS)
BUGS: tuple[str, ...] = bugs.BUGS

# Transforms whose equivalence rests on reasoning about run-time behaviour (not on an AST or
# bytecode identity check); task builders execute these in the sandbox when they can.
BEHAVIOURAL: frozenset[str] = frozenset({"for_to_while", "while_to_for", "swap_if_else",
                                         "fstring_to_format", "format_to_fstring"})


# Deeply nested code, or a node libcst refuses to build or re-read: "not applicable", not a crash.
_GIVE_UPS = (RecursionError, cst.CSTValidationError, cst.ParserSyntaxError)


def _outline(source: str) -> list[tuple[str, str]] | None:
    tree = cst_tools.parse_ast(source)
    if tree is None:
        return None
    return [(type(n).__name__, n.name) for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]


def same_outline(before: str, after: str) -> bool:
    """True if ``after`` parses and defines the same functions and classes as ``before``."""
    outline = _outline(after)
    return outline is not None and outline == _outline(before)


def apply(name: str, source: str, rng: random.Random) -> str | None:
    """``source`` transformed by ``name`` (an augmentation or a bug kind); None if not applicable.

    Deep recursion or a tree libcst cannot build or re-read counts as not applicable
    rather than crashing a data pipeline; every other error is a bug and propagates.
    """
    if name in _TRANSFORMS:
        transform = _TRANSFORMS[name]
    elif name in bugs.BUGS:
        return _bug(name, source, rng)
    else:
        raise ValueError(f"unknown transform {name!r}; expected one of {AUGMENTATIONS + BUGS}")
    try:
        new = transform(source, rng)
    except _GIVE_UPS:
        return None
    if new is None or new == source or not same_outline(source, new):
        return None
    return new


def _bug(kind: str, source: str, rng: random.Random) -> str | None:
    try:
        buggy = bugs.inject(kind, source, rng)
    except _GIVE_UPS:
        return None
    return buggy if buggy is not None and same_outline(source, buggy) else None


def augment(source: str, names: Sequence[str], rng: random.Random) -> tuple[str, list[str]]:
    """Apply ``names`` in order, skipping those that do not apply; returns (source, applied)."""
    applied = []
    for name in names:
        new = apply(name, source, rng)
        if new is not None:
            source = new
            applied.append(name)
    return source, applied


def inject_bug(source: str, rng: random.Random, kinds: Sequence[str] | None = None) -> tuple[str, str] | None:
    """One bug of a kind drawn from ``kinds`` (default :data:`BUGS`): ``(buggy_source, kind)``.

    Kinds are tried in an ``rng``-shuffled order until one has a site whose edit changes the
    AST (``ast.dump`` differs) and still parses; None when no kind applies.
    """
    kinds = list(BUGS if kinds is None else kinds)
    unknown = [k for k in kinds if k not in BUGS]
    if unknown:
        raise ValueError(f"unknown bug kinds {unknown}; expected some of {BUGS}")
    rng.shuffle(kinds)
    for kind in kinds:
        buggy = _bug(kind, source, rng)
        if buggy is not None:
            return buggy, kind
    return None

