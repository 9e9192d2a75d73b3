"""Bug injection: one small, realistic mistake at one site inside a function body.

Each kind edits exactly one site of the libcst tree, so the buggy version differs from the
original by a one-token or one-line change and keeps all other formatting (the repair
task's diff is the bug, nothing else). Sites lie inside function bodies (never in default
values or decorators). The kinds:

``swap_operator``    ``+``<->``-``, ``*``<->``/``, ``//``<->``%``, ``<<``<->``>>``, ``&``<->``|``,
                     ``^``->``|``, ``**``->``*``, ``and``<->``or``, and the augmented forms;
                     never on an operand that is a string literal (``"%s" % x``)
``off_by_one``       the stop of ``range(...)`` +-1, ``<``<->``<=`` / ``>``<->``>=``, an integer
                     index or slice bound +-1
``wrong_variable``   a local read in an operand, comparison, argument, return value or index
                     replaced by another local (or parameter) of the same function
``drop_return``      ``return x`` becomes the bare expression ``x`` (the function's final return
                     is deleted instead); ``return``/``return None`` are never picked
``flip_comparison``  ``<``<->``>``, ``<=``<->``>=``, ``==``<->``!=``, ``is``<->``is not``, ``in``<->``not in``
``negate_condition`` ``if c`` / ``elif c`` / ``a if c else b`` get ``not c`` (or lose their ``not``);
                     ``while`` tests are left alone, where negation mostly makes a hang
``swap_arguments``   two adjacent positional arguments of a call swapped (if their code differs)
``wrong_constant``   an integer or float literal +-1, or ``True``<->``False``

Which site (and which variant, e.g. +1 or -1) is drawn from the caller's ``random.Random``.
A bug is not guaranteed to change behaviour on every input (``wrong_variable`` may pick a
variable that holds the same value); task builders confirm it in the sandbox when they can.
"""

from __future__ import annotations

import random

import libcst as cst

from codejax.codedata.augment import cst_tools

_BINARY_SWAPS = {
    cst.Add: cst.Subtract, cst.Subtract: cst.Add, cst.Multiply: cst.Divide, cst.Divide: cst.Multiply,
    cst.FloorDivide: cst.Modulo, cst.Modulo: cst.FloorDivide, cst.LeftShift: cst.RightShift,
    cst.RightShift: cst.LeftShift, cst.BitAnd: cst.BitOr, cst.BitOr: cst.BitAnd, cst.BitXor: cst.BitOr,
    cst.Power: cst.Multiply,
}
_AUG_SWAPS = {
    cst.AddAssign: cst.SubtractAssign, cst.SubtractAssign: cst.AddAssign, cst.MultiplyAssign: cst.DivideAssign,
    cst.DivideAssign: cst.MultiplyAssign, cst.FloorDivideAssign: cst.ModuloAssign,
    cst.ModuloAssign: cst.FloorDivideAssign, cst.LeftShiftAssign: cst.RightShiftAssign,
    cst.RightShiftAssign: cst.LeftShiftAssign, cst.BitAndAssign: cst.BitOrAssign, cst.BitOrAssign: cst.BitAndAssign,
}
_BOOL_SWAPS = {cst.And: cst.Or, cst.Or: cst.And}
_FLIPS = {
    cst.LessThan: cst.GreaterThan, cst.GreaterThan: cst.LessThan, cst.LessThanEqual: cst.GreaterThanEqual,
    cst.GreaterThanEqual: cst.LessThanEqual, cst.Equal: cst.NotEqual, cst.NotEqual: cst.Equal,
    cst.Is: cst.IsNot, cst.IsNot: cst.Is, cst.In: cst.NotIn, cst.NotIn: cst.In,
}
_STRICTNESS = {cst.LessThan: cst.LessThanEqual, cst.LessThanEqual: cst.LessThan,
               cst.GreaterThan: cst.GreaterThanEqual, cst.GreaterThanEqual: cst.GreaterThan}
_STRINGS = (cst.SimpleString, cst.ConcatenatedString, cst.FormattedString)


def _same_spacing(old: cst.CSTNode, new_type: type) -> cst.CSTNode:
    """An operator of ``new_type`` with ``old``'s surrounding whitespace."""
    kwargs = {}
    for field in ("whitespace_before", "whitespace_after"):
        if hasattr(old, field):
            kwargs[field] = getattr(old, field)
    if new_type in (cst.IsNot, cst.NotIn):
        kwargs["whitespace_between"] = cst.SimpleWhitespace(" ")
    return new_type(**kwargs)


class _Bug(cst_tools.SiteTransformer):
    """A bug kind: ``rng`` picks variants at the (single) selected site."""

    def __init__(self, rng: random.Random, selected, count_only):
        super().__init__(selected, count_only)
        self.rng = rng


class _SwapOperator(_Bug):
    def leave_BinaryOperation(self, original_node, updated_node):
        new = _BINARY_SWAPS.get(type(updated_node.operator))
        if (new is None or not self.in_body or isinstance(updated_node.left, _STRINGS)
                or isinstance(updated_node.right, _STRINGS) or not self.take()):
            return updated_node
        return updated_node.with_changes(operator=_same_spacing(updated_node.operator, new))

    def leave_BooleanOperation(self, original_node, updated_node):
        if not self.in_body or not self.take():
            return updated_node
        return updated_node.with_changes(
            operator=_same_spacing(updated_node.operator, _BOOL_SWAPS[type(updated_node.operator)]))

    def leave_AugAssign(self, original_node, updated_node):
        new = _AUG_SWAPS.get(type(updated_node.operator))
        if new is None or not self.in_body or isinstance(updated_node.value, _STRINGS) or not self.take():
            return updated_node
        return updated_node.with_changes(operator=_same_spacing(updated_node.operator, new))


class _FlipComparison(_Bug):
    def leave_ComparisonTarget(self, original_node, updated_node):
        new = _FLIPS.get(type(updated_node.operator))
        if new is None or not self.in_body or not self.take():
            return updated_node
        return updated_node.with_changes(operator=_same_spacing(updated_node.operator, new))


class _OffByOne(_Bug):
    def leave_Call(self, original_node, updated_node):
        func, args = updated_node.func, updated_node.args
        if not (self.in_body and isinstance(func, cst.Name) and func.value == "range" and 1 <= len(args) <= 3
                and all(a.keyword is None and not a.star for a in args)) or not self.take():
            return updated_node
        i = 0 if len(args) == 1 else 1
        stop = cst_tools.plus(args[i].value, self.rng.choice((1, -1)))
        return updated_node.with_changes(args=[*args[:i], args[i].with_changes(value=stop), *args[i + 1:]])

    def leave_ComparisonTarget(self, original_node, updated_node):
        new = _STRICTNESS.get(type(updated_node.operator))
        if new is None or not self.in_body or not self.take():
            return updated_node
        return updated_node.with_changes(operator=_same_spacing(updated_node.operator, new))

    def leave_Index(self, original_node, updated_node):
        if not self.in_body or cst_tools.int_value(updated_node.value) is None or not self.take():
            return updated_node
        return updated_node.with_changes(value=self._shift(updated_node.value))

    def leave_Slice(self, original_node, updated_node):
        bounds = [f for f in ("lower", "upper")
                  if getattr(updated_node, f) is not None and cst_tools.int_value(getattr(updated_node, f)) is not None]
        if not self.in_body or not bounds or not self.take():
            return updated_node
        field = self.rng.choice(bounds)
        return updated_node.with_changes(**{field: self._shift(getattr(updated_node, field))})

    def _shift(self, literal: cst.BaseExpression) -> cst.BaseExpression:
        value = cst_tools.int_value(literal) + self.rng.choice((1, -1))
        return cst.Integer(str(value)) if value >= 0 else cst.UnaryOperation(cst.Minus(), cst.Integer(str(-value)))


class _WrongVariable(_Bug):
    """Swaps a read of a local for another local; the candidates are names the function
    binds (parameters included), so the buggy code still only uses names it defines."""

    def __init__(self, rng, selected, count_only):
        super().__init__(rng, selected, count_only)
        self.locals: list[list[str]] = []

    def visit_FunctionDef(self, node):
        names = cst_tools.stored_names(node.params) | cst_tools.stored_names(node.body)
        self.locals.append(sorted(n for n in names if n not in ("self", "cls")))
        return super().visit_FunctionDef(node)

    def leave_FunctionDef(self, original_node, updated_node):
        self.locals.pop()
        return super().leave_FunctionDef(original_node, updated_node)

    def _swap(self, expr):
        if not (self.in_body and isinstance(expr, cst.Name) and self.locals and expr.value in self.locals[-1]
                and len(self.locals[-1]) > 1) or not self.take():
            return expr
        others = [n for n in self.locals[-1] if n != expr.value]
        return expr.with_changes(value=self.rng.choice(others))

    def leave_BinaryOperation(self, original_node, updated_node):
        return updated_node.with_changes(left=self._swap(updated_node.left), right=self._swap(updated_node.right))

    def leave_Comparison(self, original_node, updated_node):
        return updated_node.with_changes(left=self._swap(updated_node.left))

    def leave_ComparisonTarget(self, original_node, updated_node):
        return updated_node.with_changes(comparator=self._swap(updated_node.comparator))

    def leave_Arg(self, original_node, updated_node):
        return updated_node.with_changes(value=self._swap(updated_node.value))

    def leave_Return(self, original_node, updated_node):
        return updated_node.with_changes(value=self._swap(updated_node.value)) if updated_node.value else updated_node

    def leave_Index(self, original_node, updated_node):
        return updated_node.with_changes(value=self._swap(updated_node.value))


class _DropReturn(_Bug):
    def __init__(self, rng, selected, count_only):
        super().__init__(rng, selected, count_only)
        self.dropped: cst.Expr | None = None

    def leave_Return(self, original_node, updated_node):
        value = updated_node.value
        if (value is None or (isinstance(value, cst.Name) and value.value == "None")
                or not self.in_body or not self.take()):
            return updated_node
        self.dropped = cst.Expr(value=value, semicolon=updated_node.semicolon)
        return self.dropped

    def leave_FunctionDef(self, original_node, updated_node):
        body = updated_node.body
        # Delete the final return only if real statements remain (a docstring alone is not one).
        real = [b for i, b in enumerate(body.body) if not (i == 0 and _is_docstring(b))] \
            if isinstance(body, cst.IndentedBlock) else []
        if self.dropped is not None and len(real) > 1:
            last = body.body[-1]
            if isinstance(last, cst.SimpleStatementLine) and len(last.body) == 1 and last.body[0] is self.dropped:
                updated_node = updated_node.with_changes(body=body.with_changes(body=body.body[:-1]))
                self.dropped = None
        return super().leave_FunctionDef(original_node, updated_node)


def _is_docstring(stmt: cst.BaseStatement) -> bool:
    return (isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1 and isinstance(stmt.body[0], cst.Expr)
            and isinstance(stmt.body[0].value, (cst.SimpleString, cst.ConcatenatedString)))


class _NegateCondition(_Bug):
    def leave_If(self, original_node, updated_node):
        if not self.in_body or not self.take():
            return updated_node
        return updated_node.with_changes(test=cst_tools.negated(updated_node.test))

    def leave_IfExp(self, original_node, updated_node):
        if not self.in_body or not self.take():
            return updated_node
        return updated_node.with_changes(test=cst_tools.negated(updated_node.test))


class _SwapArguments(_Bug):
    def __init__(self, rng, selected, count_only, module: cst.Module):
        super().__init__(rng, selected, count_only)
        self.module = module

    def leave_Call(self, original_node, updated_node):
        args = updated_node.args
        pairs = [i for i in range(len(args) - 1)
                 if args[i].keyword is None and args[i + 1].keyword is None and not args[i].star
                 and not args[i + 1].star
                 and self.module.code_for_node(args[i].value) != self.module.code_for_node(args[i + 1].value)]
        if not self.in_body or not pairs or not self.take():
            return updated_node
        i = self.rng.choice(pairs)
        a, b = args[i], args[i + 1]
        swapped = [*args[:i], a.with_changes(value=b.value), b.with_changes(value=a.value), *args[i + 2:]]
        return updated_node.with_changes(args=swapped)


class _WrongConstant(_Bug):
    def leave_Integer(self, original_node, updated_node):
        if not self.in_body or not self.take():
            return updated_node
        value = cst_tools.int_value(updated_node)
        return updated_node.with_changes(value=str(value + 1 if value == 0 else value + self.rng.choice((1, -1))))

    def leave_Float(self, original_node, updated_node):
        if not self.in_body or not self.take():
            return updated_node
        return updated_node.with_changes(value=repr(float(updated_node.value.replace("_", "")) + 1.0))

    def leave_Name(self, original_node, updated_node):
        if updated_node.value not in ("True", "False") or not self.in_body or not self.take():
            return updated_node
        return updated_node.with_changes(value="False" if updated_node.value == "True" else "True")


_KINDS = {
    "swap_operator": _SwapOperator, "off_by_one": _OffByOne, "wrong_variable": _WrongVariable,
    "drop_return": _DropReturn, "flip_comparison": _FlipComparison, "negate_condition": _NegateCondition,
    "swap_arguments": _SwapArguments, "wrong_constant": _WrongConstant,
}
BUGS: tuple[str, ...] = tuple(_KINDS)

DESCRIPTIONS = {
    "swap_operator": "the wrong operator is used",
    "off_by_one": "an off-by-one error in a bound, index or comparison",
    "wrong_variable": "the wrong variable is used",
    "drop_return": "a value that should be returned is not returned",
    "flip_comparison": "a comparison is reversed",
    "negate_condition": "a condition is inverted",
    "swap_arguments": "two arguments are passed in the wrong order",
    "wrong_constant": "a constant has the wrong value",
}


def inject(kind: str, source: str, rng: random.Random) -> str | None:
    """``source`` with one bug of ``kind`` at an ``rng``-chosen site whose edit changes the AST.

    Up to three sites are tried (an edit can be a no-op on the AST, e.g. ``-x`` folded by
    nothing but spelled the same); None when the kind has no site or none works.
    """
    if kind not in _KINDS:
        raise ValueError(f"unknown bug kind {kind!r}; expected one of {BUGS}")
    module = cst_tools.parse_cst(source)
    original = cst_tools.dump(source)
    if module is None or original is None:
        return None

    def make(selected, count_only):
        if kind == "swap_arguments":
            return _SwapArguments(rng, selected, count_only, module)
        return _KINDS[kind](rng, selected, count_only)

    counter = make(None, True)
    module.visit(counter)
    sites = list(range(counter.sites))
    rng.shuffle(sites)
    for site in sites[:3]:
        try:
            buggy = module.visit(make(frozenset([site]), False)).code
        except (cst.CSTValidationError, ValueError, TypeError):
            continue
        after = cst_tools.dump(buggy)
        if after is not None and after != original:
            return buggy
    return None
