"""Control-flow rewrites that keep behaviour: for <-> while, and if/else branch swapping.

Only loops directly inside a function body are rewritten (at module or class level the
loop variable is a global or attribute that other code may read). Functions flagged by
:func:`~codejax.codedata.cst_tools.dynamic_functions` are left alone.

``for_to_while``, two shapes:

* ``for i in range(a, b[, step])`` (literal non-zero ``step``) becomes ``i = a`` /
  ``while i < b:`` ... ``i += step`` when ``i`` is not rebound in the body, not used
  anywhere else in the function (the two loops leave different final values in it), not
  captured by a nested function, lambda or generator expression, and the body has no
  ``continue`` of its own (it would skip the increment). ``b`` is re-evaluated on every
  test, so unless it is an integer literal or a local the body cannot rebind, it is first
  saved in a fresh variable. Known gap: ``range`` rejects floats and the ``while`` form does
  not, so the two differ on inputs where the original raises TypeError.
* any other ``for`` without an ``else`` becomes the iterator protocol spelled out:
  ``it = iter(xs)`` / ``while True: try: x = next(it) except StopIteration: break`` ...,
  which is exactly what ``for`` does (``continue`` and ``break`` keep their meaning).

``while_to_for`` fires only where it can prove the two loops run the same iterations:
``i = a`` (the last statement before the loop that mentions ``i``) / ``while i < b:`` (or
``<=``, ``>``, ``>=``) with ``i += c`` (or ``-= c``, ``c`` a positive literal) as the last
statement of the body, ``i`` bound nowhere else in the loop and used nowhere else in the
function, no own ``continue``, no closures in the body, and ``a`` and ``b`` provably
integers with ``b`` invariant: integer literals, ``len(...)`` (for ``a`` only), locals bound
exactly once in the function to such an expression, and ``+ - * //`` of these.

``swap_if_else``: ``if c: A else: B`` becomes ``if not c: B else: A`` (``not`` is never
pushed into a comparison, since ``not a < b`` and ``a >= b`` differ for NaN and sets).
"""

from __future__ import annotations

import collections
import random

import libcst as cst

from codejax.codedata.augment import cst_tools

_CLOSURES = (cst.Lambda, cst.FunctionDef, cst.ClassDef, cst.GeneratorExp)
_LOOSE = (cst.IfExp, cst.Lambda, cst.BooleanOperation, cst.Comparison, cst.NamedExpr)
_INT_OPS = (cst.Add, cst.Subtract, cst.Multiply, cst.FloorDivide)


class _FunctionTransformer(cst_tools.SiteTransformer):
    """Tracks the innermost function or class, so loops know the scope they belong to."""

    def __init__(self, source: str, selected, count_only):
        super().__init__(selected, count_only)
        module = cst_tools.parse_cst(source)
        self.dynamic = cst_tools.dynamic_functions(module)
        self.range_ok = not cst_tools.module_rebinds(source, "range")
        self.len_ok = not cst_tools.module_rebinds(source, "len")
        self.iter_ok = not any(cst_tools.module_rebinds(source, n) for n in ("iter", "next", "StopIteration"))
        self.shadowed = {n for n in _PURE_BUILTINS | {"list", "dict", "set"} if cst_tools.module_rebinds(source, n)}
        self.fresh = cst_tools.FreshNames(cst_tools.taken_names(source))
        self.scopes: list[cst.CSTNode] = []
        self._consts: dict[int, set[str]] = {}

    def visit_FunctionDef(self, node):
        self.scopes.append(node)
        return super().visit_FunctionDef(node)

    def leave_FunctionDef(self, original_node, updated_node):
        self.scopes.pop()
        return super().leave_FunctionDef(original_node, updated_node)

    def visit_ClassDef(self, node):
        self.scopes.append(node)
        return True

    def leave_ClassDef(self, original_node, updated_node):
        self.scopes.pop()
        return updated_node

    @property
    def function(self) -> cst.FunctionDef | None:
        """The function whose body we are directly in (None at module or class level)."""
        if not self.in_body or not self.scopes or not isinstance(self.scopes[-1], cst.FunctionDef):
            return None
        fn = self.scopes[-1]
        return None if id(fn) in self.dynamic else fn

    def int_constants(self, fn: cst.FunctionDef) -> set[str]:
        """Locals of ``fn`` bound exactly once, by ``name = <provably int expression>``."""
        if id(fn) not in self._consts:
            counts = cst_tools.binding_counts(fn)
            candidates = {}

            class _Assigns(cst.CSTVisitor):
                def visit_Assign(self, node):
                    if len(node.targets) == 1 and isinstance(node.targets[0].target, cst.Name):
                        candidates[node.targets[0].target.value] = node.value

            fn.body.visit(_Assigns())
            consts: set[str] = set()
            for _ in range(3):  # names defined from other constants, a few levels deep
                consts |= {n for n, v in candidates.items() if counts[n] == 1 and self.is_int(v, consts, True)}
            self._consts[id(fn)] = consts
        return self._consts[id(fn)]

    def is_int(self, expr: cst.BaseExpression, consts: set[str], allow_len: bool) -> bool:
        """True if ``expr`` always evaluates to an int (and, without ``len``, never changes)."""
        if cst_tools.int_value(expr) is not None:
            return True
        if isinstance(expr, cst.Name):
            return expr.value in consts
        if isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, cst.Minus):
            return self.is_int(expr.expression, consts, allow_len)
        if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, _INT_OPS):
            return self.is_int(expr.left, consts, allow_len) and self.is_int(expr.right, consts, allow_len)
        return (allow_len and self.len_ok and isinstance(expr, cst.Call) and isinstance(expr.func, cst.Name)
                and expr.func.value == "len" and len(expr.args) == 1 and not expr.args[0].star
                and expr.args[0].keyword is None)


def _block(body: cst.BaseSuite) -> list[cst.BaseStatement]:
    if isinstance(body, cst.IndentedBlock):
        return list(body.body)
    return [cst.SimpleStatementLine(body=list(body.body))]


def _indented(original: cst.BaseSuite, statements: list[cst.BaseStatement]) -> cst.IndentedBlock:
    statements = statements or [cst.SimpleStatementLine(body=[cst.Pass()])]
    if isinstance(original, cst.IndentedBlock):
        return original.with_changes(body=statements)
    return cst.IndentedBlock(body=statements)


def _line(small: cst.BaseSmallStatement, leading=()) -> cst.SimpleStatementLine:
    return cst.SimpleStatementLine(body=[small], leading_lines=list(leading))


def _assign(target: cst.BaseAssignTargetExpression, value: cst.BaseExpression) -> cst.Assign:
    return cst.Assign(targets=[cst.AssignTarget(target=target)], value=value)


def _uses(node: cst.CSTNode, name: str) -> int:
    return sum(1 for n in cst_tools.name_uses(node) if n == name)


# --------------------------------------------------------------------------- for -> while

class _ForToWhile(_FunctionTransformer):
    def leave_For(self, original_node, updated_node):
        fn = self.function
        if fn is None or original_node.asynchronous is not None:
            return updated_node
        plan = self._range_plan(fn, original_node) or self._iterator_plan(original_node)
        if plan is None or not self.take():
            return updated_node
        return plan(updated_node)

    def _range_plan(self, fn: cst.FunctionDef, loop: cst.For):
        target, call = loop.target, loop.iter
        if not (self.range_ok and isinstance(target, cst.Name) and isinstance(call, cst.Call)
                and isinstance(call.func, cst.Name) and call.func.value == "range"
                and 1 <= len(call.args) <= 3 and all(a.keyword is None and not a.star for a in call.args)):
            return None
        step = cst_tools.int_value(call.args[2].value) if len(call.args) == 3 else 1
        name = target.value
        stored = cst_tools.stored_names(loop.body)
        if (not step or name in stored or cst_tools.has_own_continue(loop)
                or cst_tools.contains(loop.body, _CLOSURES)
                or _uses(fn, name) != _uses(loop, name)):
            return None
        args = [a.value for a in call.args]
        start, stop = (cst.Integer("0"), args[0]) if len(args) == 1 else (args[0], args[1])
        stable = cst_tools.int_value(stop) is not None or (
            isinstance(stop, cst.Name) and stop.value not in stored
            and stop.value in cst_tools.stored_names(fn.params) | cst_tools.stored_names(fn.body))

        def rewrite(updated: cst.For):
            u_args = [a.value for a in updated.iter.args]
            u_start, u_stop = (cst.Integer("0"), u_args[0]) if len(u_args) == 1 else (u_args[0], u_args[1])
            first = [_line(_assign(cst.Name(name), u_start), updated.leading_lines)]
            bound = u_stop
            if not stable:
                bound = cst.Name(self.fresh("stop", "end", "limit"))
                first.append(_line(_assign(bound, u_stop)))
            elif isinstance(bound, _LOOSE):
                bound = cst_tools.paren(bound)
            op = cst.LessThan() if step > 0 else cst.GreaterThan()
            inc = cst.AugAssign(target=cst.Name(name), operator=cst.AddAssign() if step > 0 else cst.SubtractAssign(),
                                value=cst.Integer(str(abs(step))))
            loop_ = cst.While(test=cst.Comparison(left=cst.Name(name), comparisons=[cst.ComparisonTarget(op, bound)]),
                              body=_indented(updated.body, [*_block(updated.body), _line(inc)]),
                              orelse=updated.orelse)
            return cst.FlattenSentinel([*first, loop_])

        return rewrite

    def _iterator_plan(self, loop: cst.For):
        if loop.orelse is not None or not self.iter_ok:
            return None

        def rewrite(updated: cst.For):
            source = updated.iter
            if isinstance(source, cst.Tuple) and not source.lpar:
                source = cst_tools.paren(source)
            hint = f"{source.value}_iter" if isinstance(source, cst.Name) else "iterator"
            it = cst.Name(self.fresh(hint, "iterator", "it"))
            fetch = cst.Try(
                body=cst.IndentedBlock(body=[_line(_assign(updated.target, cst.Call(cst.Name("next"), [cst.Arg(it)])))]),
                handlers=[cst.ExceptHandler(type=cst.Name("StopIteration"),
                                            body=cst.IndentedBlock(body=[_line(cst.Break())]))])
            loop_ = cst.While(test=cst.Name("True"), body=_indented(updated.body, [fetch, *_block(updated.body)]))
            make = _line(_assign(it, cst.Call(cst.Name("iter"), [cst.Arg(source)])), updated.leading_lines)
            return cst.FlattenSentinel([make, loop_])

        return rewrite


def for_to_while(source: str, rng: random.Random) -> str | None:
    """Rewrite ``for`` loops in function bodies as ``while`` loops (see the module doc)."""
    return cst_tools.run_sites(lambda sel, count: _ForToWhile(source, sel, count), source, rng)


# --------------------------------------------------------------------------- while -> for

_STEP_OPS = {cst.LessThan: 1, cst.LessThanEqual: 1, cst.GreaterThan: -1, cst.GreaterThanEqual: -1}


class _WhileToFor(_FunctionTransformer):
    def leave_IndentedBlock(self, original_node, updated_node):
        fn = self.function
        if fn is None or not self.range_ok:
            return updated_node
        old, new = list(original_node.body), list(updated_node.body)
        drop: set[int] = set()
        for k, stmt in enumerate(old):
            if not isinstance(stmt, cst.While):
                continue
            plan = self._plan(fn, old, k)
            if plan is None or not self.take():
                continue
            init_index, build = plan
            new[k] = build(new[k], new[init_index])
            drop.add(init_index)
        if not drop:
            return updated_node
        return updated_node.with_changes(body=[s for i, s in enumerate(new) if i not in drop])

    def _plan(self, fn: cst.FunctionDef, siblings: list[cst.BaseStatement], k: int):
        loop = siblings[k]
        test = loop.test
        if not (isinstance(test, cst.Comparison) and len(test.comparisons) == 1 and isinstance(test.left, cst.Name)
                and type(test.comparisons[0].operator) in _STEP_OPS and isinstance(loop.body, cst.IndentedBlock)
                and len(loop.body.body) >= 1):
            return None
        name, direction = test.left.value, _STEP_OPS[type(test.comparisons[0].operator)]
        bound = test.comparisons[0].comparator
        last = loop.body.body[-1]
        if not (isinstance(last, cst.SimpleStatementLine) and len(last.body) == 1
                and isinstance(last.body[0], cst.AugAssign) and isinstance(last.body[0].target, cst.Name)
                and last.body[0].target.value == name):
            return None
        inc = last.body[0]
        c = cst_tools.int_value(inc.value)
        wanted = cst.AddAssign if direction > 0 else cst.SubtractAssign
        if not (isinstance(inc.operator, wanted) and isinstance(inc.value, cst.Integer) and c and c > 0):
            return None
        rest = list(loop.body.body[:-1])
        if (any(name in cst_tools.stored_names(s) for s in rest) or cst_tools.stored_names(test)
                or cst_tools.has_own_continue(loop) or cst_tools.contains(loop.body, _CLOSURES)):
            return None
        consts = self.int_constants(fn)
        if not (self.is_int(bound, consts, allow_len=False) or self._unchanging_len(fn, loop, bound)):
            return None
        if _uses(bound, name) or set(cst_tools.name_uses(bound)) & cst_tools.stored_names(loop.body):
            return None
        init_index = next((j for j in range(k - 1, -1, -1) if _uses(siblings[j], name)), None)
        if init_index is None:
            return None
        init = siblings[init_index]
        if not (isinstance(init, cst.SimpleStatementLine) and len(init.body) == 1 and isinstance(init.body[0], cst.Assign)
                and len(init.body[0].targets) == 1 and isinstance(init.body[0].targets[0].target, cst.Name)
                and init.body[0].targets[0].target.value == name):
            return None
        start = init.body[0].value
        if not self.is_int(start, consts, allow_len=True) or _uses(start, name):
            return None
        if init_index != k - 1 and cst_tools.int_value(start) is None:
            return None  # moving a non-literal start past other statements could change its value
        if _uses(fn, name) != _uses(init, name) + _uses(loop, name):
            return None
        inclusive = isinstance(test.comparisons[0].operator, (cst.LessThanEqual, cst.GreaterThanEqual))

        def build(updated: cst.While, updated_init: cst.SimpleStatementLine) -> cst.For:
            u_bound = updated.test.comparisons[0].comparator
            stop = cst_tools.plus(u_bound, direction) if inclusive else u_bound
            u_start = updated_init.body[0].value
            if direction > 0 and c == 1:
                args = [stop] if cst_tools.int_value(u_start) == 0 else [u_start, stop]
            else:
                step = cst.Integer(str(c)) if direction > 0 else cst.UnaryOperation(cst.Minus(), cst.Integer(str(c)))
                args = [u_start, stop, step]
            body = list(updated.body.body[:-1])
            return cst.For(target=cst.Name(name), iter=cst.Call(cst.Name("range"), [cst.Arg(a) for a in args]),
                           body=_indented(updated.body, body), orelse=updated.orelse,
                           leading_lines=[*updated_init.leading_lines, *updated.leading_lines])

        return init_index, build


    def _unchanging_len(self, fn: cst.FunctionDef, loop: cst.While, bound: cst.BaseExpression) -> bool:
        """True for ``len(s)`` where the loop body provably cannot change ``s``.

        The body may only read ``s`` (subscripts, ``len``, ``in``), call side-effect-free
        builtins, and mutate locals that hold objects the function made itself (bound only
        to a literal, a comprehension or ``list()``/``dict()``/``set()``), which cannot be
        ``s`` or alias it. No ``yield``/``await`` (the caller could run in between), no
        attribute or subscript stores or ``del`` on anything else. Dunder methods with side
        effects (``__getitem__`` that mutates) are outside what this proves.
        """
        if not (self.len_ok and isinstance(bound, cst.Call) and isinstance(bound.func, cst.Name)
                and bound.func.value == "len" and len(bound.args) == 1 and isinstance(bound.args[0].value, cst.Name)
                and not bound.args[0].star and bound.args[0].keyword is None):
            return False
        seq = bound.args[0].value.value
        shadowed = self.shadowed
        fresh = self._fresh_locals(fn) - {seq}
        body = loop.body
        if seq in cst_tools.stored_names(body) or cst_tools.contains(body, (cst.Yield, cst.Await, cst.Del, cst.Global,
                                                                          cst.Nonlocal, *_CLOSURES)):
            return False
        ok = True

        class _Check(cst.CSTVisitor):
            def visit_Call(self, node):
                nonlocal ok
                func = node.func
                if isinstance(func, cst.Name) and func.value in _PURE_BUILTINS and func.value not in shadowed:
                    return
                if (isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name)
                        and func.value.value in fresh and func.attr.value in _FRESH_MUTATORS):
                    return
                ok = False

            def visit_AssignTarget(self, node):
                nonlocal ok
                if isinstance(node.target, (cst.Attribute, cst.Subscript)) and not _on_fresh(node.target, fresh):
                    ok = False

            def visit_AugAssign(self, node):
                nonlocal ok
                if isinstance(node.target, (cst.Attribute, cst.Subscript)) and not _on_fresh(node.target, fresh):
                    ok = False

            def visit_Attribute(self, node):
                nonlocal ok
                if isinstance(node.value, cst.Name) and node.value.value == seq:
                    ok = False  # s.append(...), s.sort(), ...

        body.visit(_Check())
        return ok

    def _fresh_locals(self, fn: cst.FunctionDef) -> set[str]:
        """Locals only ever bound to objects made right there (literals, comprehensions, list())."""
        counts = cst_tools.binding_counts(fn)
        shadowed = self.shadowed
        made: collections.Counter = collections.Counter()

        class _Assigns(cst.CSTVisitor):
            def visit_Assign(self, node):
                if (len(node.targets) == 1 and isinstance(node.targets[0].target, cst.Name)
                        and _is_new_object(node.value, shadowed)):
                    made[node.targets[0].target.value] += 1

        fn.body.visit(_Assigns())
        return {n for n, k in made.items() if counts[n] == k}


_PURE_BUILTINS = frozenset({"len", "abs", "min", "max", "int", "float", "str", "bool", "ord", "chr", "repr",
                            "isinstance", "divmod", "round", "hex", "oct", "bin"})
_FRESH_MUTATORS = frozenset({"append", "extend", "add", "update", "insert", "pop", "setdefault", "discard",
                             "remove", "clear"})


def _is_new_object(value: cst.BaseExpression, shadowed: set[str]) -> bool:
    if isinstance(value, (cst.List, cst.Dict, cst.Set, cst.ListComp, cst.DictComp, cst.SetComp)):
        return True
    return (isinstance(value, cst.Call) and isinstance(value.func, cst.Name) and not value.args
            and value.func.value in ("list", "dict", "set") and value.func.value not in shadowed)


def _on_fresh(target: cst.BaseExpression, fresh: set[str]) -> bool:
    while isinstance(target, (cst.Attribute, cst.Subscript)):
        target = target.value
    return isinstance(target, cst.Name) and target.value in fresh


def while_to_for(source: str, rng: random.Random) -> str | None:
    """Rewrite counting ``while`` loops as ``for ... in range(...)`` where provably equivalent."""
    return cst_tools.run_sites(lambda sel, count: _WhileToFor(source, sel, count), source, rng)


# --------------------------------------------------------------------------- if/else swap

class _SwapIfElse(cst_tools.SiteTransformer):
    def leave_If(self, original_node, updated_node):
        orelse = updated_node.orelse
        if not isinstance(orelse, cst.Else) or not self.take():
            return updated_node
        return updated_node.with_changes(test=cst_tools.negated(updated_node.test), body=orelse.body,
                                         orelse=orelse.with_changes(body=updated_node.body))


def swap_if_else(source: str, rng: random.Random) -> str | None:
    """Swap the branches of about half of the ``if``/``else`` statements, negating the test."""
    return cst_tools.run_sites(lambda sel, count: _SwapIfElse(sel, count), source, rng, fraction=0.5)
