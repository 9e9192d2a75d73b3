"""Plumbing shared by the source transforms: cached parsing, fresh names, site selection.

Transforms edit a libcst tree (which keeps every comment, blank line and quote style)
and are judged on the stdlib ``ast`` (which ignores them). Parsing is cached because one
function is usually put through many transforms in a row.
"""

from __future__ import annotations

import ast
import builtins
import collections
import functools
import keyword
import random
import re

import libcst as cst

# libcst's native parser can panic on pathological input; treat any failure as "no tree".
_PARSE_ERRORS = (cst.ParserSyntaxError, SyntaxError, ValueError, RecursionError, MemoryError)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RESERVED = frozenset(dir(builtins)) | frozenset(keyword.kwlist) | frozenset(keyword.softkwlist)


@functools.lru_cache(maxsize=32)
def parse_cst(source: str) -> cst.Module | None:
    """The libcst tree of ``source`` or None; trees are immutable, so sharing one is safe."""
    try:
        return cst.parse_module(source)
    except _PARSE_ERRORS:
        return None
    except Exception:  # noqa: BLE001 - the native parser raises its own error types
        return None


@functools.lru_cache(maxsize=32)
def parse_ast(source: str) -> ast.Module | None:
    """The stdlib AST of ``source`` or None. Callers must not mutate the (shared) result."""
    try:
        return ast.parse(source)
    except _PARSE_ERRORS:
        return None


def dump(source: str) -> str | None:
    """Positions-free ``ast.dump`` of ``source`` (None if it does not parse)."""
    tree = parse_ast(source)
    return None if tree is None else ast.dump(tree)


def taken_names(source: str) -> set[str]:
    """Every identifier-like word in ``source`` plus builtins and keywords.

    A regex over the raw text over-approximates (words in strings and comments count),
    which is the safe direction for picking names that must not collide with anything.
    """
    return set(_IDENTIFIER.findall(source)) | RESERVED


class FreshNames:
    """Hands out identifiers that collide with nothing in ``taken`` (nor with each other)."""

    def __init__(self, taken: set[str]):
        self.taken = set(taken)

    def __call__(self, *candidates: str) -> str:
        """The first free name among ``candidates``, else the first one with a number added."""
        for name in candidates:
            if name not in self.taken:
                self.taken.add(name)
                return name
        base = candidates[0] if candidates else "tmp"
        n = 1
        while f"{base}_{n}" in self.taken:
            n += 1
        self.taken.add(f"{base}_{n}")
        return f"{base}_{n}"


@functools.lru_cache(maxsize=32)
def bound_names(source: str) -> frozenset[str]:
    """Every name ``source`` binds anywhere (``"*"`` for a star import); all names if unparsable."""
    tree = parse_ast(source)
    if tree is None:
        return frozenset(["*"])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name.split(".")[0])
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names.update(node.names)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            names.add(node.rest)
    return frozenset(names)


def module_rebinds(source: str, name: str) -> bool:
    """True if ``source`` may bind ``name`` (so a builtin like ``range`` may be shadowed)."""
    names = bound_names(source)
    return name in names or "*" in names


class SiteTransformer(cst.CSTTransformer):
    """Base for transforms that edit some of their eligible sites.

    Subclasses call :meth:`take` at each eligible site, in traversal order, and edit the
    site only when it returns True. A first pass with ``selected=None`` counts the sites
    (``count_only`` leaves the tree alone); a second pass edits the chosen indices. The
    traversal order is fixed, so the same indices always name the same sites.

    ``in_body`` is True inside a function body (not its parameters or decorators), where
    changes have observable behaviour a test can exercise.
    """

    def __init__(self, selected: frozenset[int] | None = None, count_only: bool = False):
        super().__init__()
        self.selected = selected
        self.count_only = count_only
        self.sites = 0
        self._function_depth = 0
        self._header_depth = 0

    def take(self) -> bool:
        index = self.sites
        self.sites += 1
        if self.count_only:
            return False
        return self.selected is None or index in self.selected

    @property
    def in_body(self) -> bool:
        return self._function_depth > 0 and self._header_depth == 0

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        self._function_depth += 1
        return True

    def leave_FunctionDef(self, original_node, updated_node):
        self._function_depth -= 1
        return updated_node

    def visit_Parameters(self, node: cst.Parameters) -> bool:
        self._header_depth += 1
        return True

    def leave_Parameters(self, original_node, updated_node):
        self._header_depth -= 1
        return updated_node

    def visit_Decorator(self, node: cst.Decorator) -> bool:
        self._header_depth += 1
        return True

    def leave_Decorator(self, original_node, updated_node):
        self._header_depth -= 1
        return updated_node


def run_sites(make, source: str, rng: random.Random, fraction: float | None = None) -> str | None:
    """Count the sites of ``make()`` (a :class:`SiteTransformer` factory), pick some, apply.

    ``fraction=None`` edits every site; otherwise each site is kept with that probability,
    and at least one always is. Returns None when there is no site or nothing changed.
    """
    module = parse_cst(source)
    if module is None:
        return None
    if fraction is None:  # every site: one pass, no counting
        new = module.visit(make(None, False)).code
        return None if new == source else new
    counter = make(None, True)
    module.visit(counter)
    if counter.sites == 0:
        return None
    selected = frozenset(i for i in range(counter.sites) if rng.random() < fraction)
    selected = selected or frozenset([rng.randrange(counter.sites)])
    new = module.visit(make(selected, False)).code
    return None if new == source else new


def paren(expr: cst.BaseExpression) -> cst.BaseExpression:
    """``expr`` wrapped in parentheses unless it already has some."""
    if expr.lpar:
        return expr
    return expr.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()])


# Expressions that bind at least as tightly as a binary + or -, so "<expr> + 1" keeps its meaning.
# (A tuple counts only with its parentheses, which the lpar check sees.)
_TIGHT = (cst.Name, cst.Attribute, cst.Call, cst.Subscript, cst.Integer, cst.Float,
          cst.SimpleString, cst.List, cst.Dict, cst.Set)
_ADDITIVE = (cst.Add, cst.Subtract, cst.Multiply, cst.Divide, cst.FloorDivide, cst.Modulo,
             cst.Power, cst.MatrixMultiply)


def as_operand(expr: cst.BaseExpression) -> cst.BaseExpression:
    """``expr`` made safe as the left operand of ``+``/``-`` (parenthesised if it must be)."""
    if expr.lpar or isinstance(expr, _TIGHT):
        return expr
    if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, _ADDITIVE):
        return expr
    if isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, (cst.Minus, cst.Plus)):
        return expr
    return paren(expr)


def plus(expr: cst.BaseExpression, delta: int) -> cst.BaseExpression:
    """``expr + delta`` (folded when ``expr`` is an integer literal)."""
    if isinstance(expr, cst.Integer) and not expr.lpar:
        value = int_value(expr)
        if value is not None:
            folded = cst.Integer(str(abs(value + delta)))
            return folded if value + delta >= 0 else cst.UnaryOperation(cst.Minus(), folded)
    op = cst.Add() if delta > 0 else cst.Subtract()
    return cst.BinaryOperation(left=as_operand(expr), operator=op, right=cst.Integer(str(abs(delta))))


def int_value(expr: cst.BaseExpression) -> int | None:
    """The value of an integer literal, or of ``-<integer literal>``; None otherwise."""
    if isinstance(expr, cst.Integer):
        try:
            return int(expr.value, 0)  # base 0 reads 0x/0o/0b prefixes and underscores
        except ValueError:
            return None
    if (isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, cst.Minus)
            and isinstance(expr.expression, cst.Integer)):
        inner = int_value(expr.expression)
        return None if inner is None else -inner
    return None


def negated(test: cst.BaseExpression) -> cst.BaseExpression:
    """``not test``, or ``test``'s operand when it already is ``not x``."""
    if isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not) and not test.lpar:
        return test.expression
    loose = (cst.BooleanOperation, cst.IfExp, cst.Lambda, cst.NamedExpr)
    operand = paren(test) if isinstance(test, loose) else test
    return cst.UnaryOperation(operator=cst.Not(), expression=operand)


class _NameCollector(cst.CSTVisitor):
    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def visit_Name(self, node: cst.Name) -> None:
        self.names.append(node.value)


def name_uses(node: cst.CSTNode) -> list[str]:
    """Every ``Name`` inside ``node`` (attribute names and keywords included: conservative)."""
    collector = _NameCollector()
    node.visit(collector)
    return collector.names


def _target_names(target: cst.BaseExpression, out) -> None:
    """Add the plain names ``target`` binds to ``out`` (a set or a counter)."""
    if isinstance(target, cst.Name):
        out.add(target.value)
    elif isinstance(target, (cst.Tuple, cst.List)):
        for element in target.elements:
            _target_names(element.value, out)
    elif isinstance(target, cst.StarredElement):
        _target_names(target.value, out)


class _NameCounter(collections.Counter):
    """A Counter with ``add``/``update`` of names, so collectors read like set code."""

    def add(self, name: str) -> None:
        self[name] += 1


class _StoreCollector(cst.CSTVisitor):
    """Names (re)bound anywhere inside a node, counted per binding; comprehension variables
    count too (conservative)."""

    def __init__(self):
        super().__init__()
        self.names = _NameCounter()

    def visit_AssignTarget(self, node):
        _target_names(node.target, self.names)

    def visit_AugAssign(self, node):
        _target_names(node.target, self.names)

    def visit_AnnAssign(self, node):
        _target_names(node.target, self.names)

    def visit_For(self, node):
        _target_names(node.target, self.names)

    def visit_CompFor(self, node):
        _target_names(node.target, self.names)

    def visit_NamedExpr(self, node):
        _target_names(node.target, self.names)

    def visit_AsName(self, node):
        _target_names(node.name, self.names)

    def visit_Del(self, node):
        _target_names(node.target, self.names)

    def visit_ImportAlias(self, node):
        if node.asname is None:
            name = node.name
            while isinstance(name, cst.Attribute):
                name = name.value
            _target_names(name, self.names)

    def visit_FunctionDef(self, node):
        self.names.add(node.name.value)

    def visit_ClassDef(self, node):
        self.names.add(node.name.value)

    def visit_Param(self, node):
        self.names.add(node.name.value)

    def visit_Global(self, node):
        self.names.update(n.name.value for n in node.names)

    def visit_Nonlocal(self, node):
        self.names.update(n.name.value for n in node.names)

    def visit_MatchAs(self, node):
        if node.name is not None:
            self.names.add(node.name.value)

    def visit_MatchStar(self, node):
        if node.name is not None:
            self.names.add(node.name.value)

    def visit_MatchMapping(self, node):
        if node.rest is not None:
            self.names.add(node.rest.value)


def binding_counts(node: cst.CSTNode) -> collections.Counter:
    """How often each name is bound inside ``node`` (targets, loop variables, imports, defs...)."""
    collector = _StoreCollector()
    node.visit(collector)
    return collector.names


def stored_names(node: cst.CSTNode) -> set[str]:
    """Names that ``node`` may rebind."""
    return set(binding_counts(node))


def contains(node: cst.CSTNode, types: tuple[type, ...], stop: tuple[type, ...] = ()) -> bool:
    """True if ``node`` has a descendant of one of ``types``, not looking inside ``stop`` nodes."""
    found = False

    class _Find(cst.CSTVisitor):
        def on_visit(self, child):
            nonlocal found
            if found:
                return False
            if child is not node and isinstance(child, types):
                found = True
                return False
            return not (child is not node and isinstance(child, stop))

    node.visit(_Find())
    return found


_LOOPS_AND_SCOPES = (cst.For, cst.While, cst.FunctionDef, cst.ClassDef, cst.Lambda)


def has_own_continue(loop: cst.For | cst.While) -> bool:
    """True if a ``continue`` in ``loop``'s body belongs to ``loop`` (not to a nested loop)."""
    return contains(loop.body, (cst.Continue,), stop=_LOOPS_AND_SCOPES)


class DynamicScopeFinder(cst.CSTVisitor):
    """Marks functions whose locals can be reached by name at run time or from other scopes.

    ``locals()``/``vars()``/``eval``/``exec``/``globals()``/``dir()`` read or write locals by
    string, ``global``/``nonlocal`` share them with other scopes, and ``f"{x=}"`` prints the
    variable's *name*; renaming or restructuring around any of these changes behaviour. A
    construct marks every function it is nested in.
    """

    DYNAMIC_CALLS = frozenset({"locals", "vars", "eval", "exec", "globals", "dir", "__import__"})

    def __init__(self):
        super().__init__()
        self.stack: list[cst.FunctionDef] = []
        self.dynamic: set[int] = set()

    def _mark(self) -> None:
        self.dynamic.update(id(f) for f in self.stack)

    def visit_FunctionDef(self, node):
        self.stack.append(node)

    def leave_FunctionDef(self, original_node):
        self.stack.pop()

    def visit_Global(self, node):
        self._mark()

    def visit_Nonlocal(self, node):
        self._mark()

    def visit_FormattedStringExpression(self, node):
        if node.equal is not None:
            self._mark()

    def visit_Call(self, node):
        if isinstance(node.func, cst.Name) and node.func.value in self.DYNAMIC_CALLS:
            self._mark()


def dynamic_functions(module: cst.Module) -> set[int]:
    """``id()`` of every FunctionDef in ``module`` that :class:`DynamicScopeFinder` marks."""
    finder = DynamicScopeFinder()
    module.visit(finder)
    return finder.dynamic
