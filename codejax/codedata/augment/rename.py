"""Scope-correct renaming of function-local variables, proven by comparing bytecode.

Only *locals* are renamed: names a function binds by assignment, loop, ``with``/``except
... as``, walrus or ``match`` capture. Parameters keep their names because callers may pass
them by keyword; globals, nonlocals, builtins, attributes, imports and nested ``def``/
``class`` names are never touched. Functions that reach their locals by string or share
them with other scopes (``locals()``, ``eval``, ``global``, ``f"{x=}"``...; see
:class:`~codejax.codedata.cst_tools.DynamicScopeFinder`) are skipped whole.

libcst's ScopeProvider finds each local's bindings and uses (closures and comprehensions
included). The result is then *proven* equivalent: both versions are compiled and their
instruction streams compared op by op, with the new local/cell/free names mapped back to
the old ones and every global and attribute name required to be unchanged. A renaming
that would turn a local into a global, or miss a use, changes the bytecode and is rejected.
"""

from __future__ import annotations

import dis
import random
import types
from collections.abc import Callable

import libcst as cst
import libcst.metadata as meta

from codejax.codedata.augment import cst_tools

PLACEHOLDER = "placeholder"   # var_0, var_1, ... (the variable-naming task's masks)
GENERIC = "generic"           # value, item, result, ...
SHORT = "short"               # a, b, c, ...
SCHEMES = (GENERIC, SHORT, PLACEHOLDER)

_GENERIC_WORDS = ("value", "item", "result", "temp", "data", "current", "entry", "element",
                  "acc", "obj", "val", "part", "piece", "token", "record", "chunk", "field",
                  "elem", "thing", "buf", "cur", "aux", "holder", "target")
_NAME_OPS = frozenset(dis.haslocal) | frozenset(dis.hasfree)


def namer(scheme: str, rng: random.Random) -> Callable[[cst_tools.FreshNames], str]:
    """A function that draws the next new name from ``scheme`` (order shuffled by ``rng``)."""
    if scheme == PLACEHOLDER:
        count = iter(range(1 << 30))
        return lambda fresh: fresh(f"var_{next(count)}")
    if scheme == GENERIC:
        words = list(_GENERIC_WORDS)
    elif scheme == SHORT:
        words = [chr(c) for c in range(ord("a"), ord("z") + 1) if chr(c) not in "lo"]
    else:
        raise ValueError(f"unknown naming scheme {scheme!r}; expected one of {SCHEMES}")
    rng.shuffle(words)
    return lambda fresh: fresh(*words)


def _renamable(scope: meta.FunctionScope, params: set[str], order: dict[int, int],
               ) -> dict[str, list[cst.Name]]:
    """For each local that may be renamed, in order of first appearance: its Name nodes."""
    by_name: dict[str, list] = {}
    for assignment in scope.assignments:
        by_name.setdefault(assignment.name, []).append(assignment)
    out = {}
    for name, assignments in by_name.items():
        if name in params or name.startswith("__"):
            continue
        nodes: list[cst.Name] = []
        ok = True
        for a in assignments:
            # Import and def/class bindings have no Name node of their own to rewrite.
            if type(a) is not meta.Assignment or not isinstance(a.node, cst.Name) or a.scope is not scope:
                ok = False
                break
            nodes.append(a.node)
            for access in a.references:
                # Accesses inside string annotations point at the string; leave those alone.
                if not isinstance(access.node, cst.Name) or access.node.value != name:
                    ok = False
                    break
                nodes.append(access.node)
        if ok and nodes:
            out[name] = nodes
    return dict(sorted(out.items(), key=lambda item: min(order.get(id(n), 1 << 60) for n in item[1])))


def _param_names(fn: cst.FunctionDef) -> set[str]:
    p = fn.params
    every = [*p.posonly_params, *p.params, *p.kwonly_params]
    for star in (p.star_arg, p.star_kwarg):
        if isinstance(star, cst.Param):
            every.append(star)
    return {q.name.value for q in every}


class _Rename(cst.CSTTransformer):
    def __init__(self, targets: dict[int, str]):
        super().__init__()
        self.targets = targets

    def leave_Name(self, original_node, updated_node):
        new = self.targets.get(id(original_node))
        return updated_node if new is None else updated_node.with_changes(value=new)


_CELL_OPS = frozenset({"MAKE_CELL", "LOAD_CLOSURE"})


def _tokens(code: types.CodeType, back: dict[str, str]) -> tuple[list, list[types.CodeType]]:
    """(opname, argument) per instruction with names mapped by ``back``; nested code objects
    are replaced by placeholders and returned separately.

    Cell and free variables are numbered in sorted-name order, so renaming can reorder a run
    of ``MAKE_CELL``/``LOAD_CLOSURE`` (the closure tuple follows the inner function's sorted
    free variables on both sides); such runs are compared as sorted lists.
    """
    tokens, codes, run = [], [], []
    for ins in dis.get_instructions(code):
        if ins.opname in ("CACHE", "EXTENDED_ARG"):
            continue
        arg = ins.argval
        if isinstance(arg, types.CodeType):
            codes.append(arg)
            arg = ("<code>", len(codes))
        elif ins.opcode in _NAME_OPS and isinstance(arg, str):
            arg = back.get(arg, arg)
        elif isinstance(arg, float) and arg != arg:
            arg = "<nan>"
        token = (ins.opname, type(arg).__name__, arg)
        if ins.opname in _CELL_OPS:
            run.append(token)
            continue
        tokens += sorted(run, key=repr) + [token]
        run = []
    return tokens + sorted(run, key=repr), codes


def same_bytecode(old: types.CodeType, new: types.CodeType, back: dict[str, str]) -> bool:
    """True if ``new`` is ``old`` with local/cell/free names renamed by ``back``'s inverse."""
    if old.co_argcount != new.co_argcount or old.co_flags != new.co_flags:
        return False
    old_tokens, old_codes = _tokens(old, {})
    new_tokens, new_codes = _tokens(new, back)
    return (old_tokens == new_tokens and len(old_codes) == len(new_codes)
            and all(same_bytecode(a, b, back) for a, b in zip(old_codes, new_codes)))


def _compile(source: str) -> types.CodeType | None:
    try:
        return compile(source, "<rename>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def rename_locals(source: str, next_name: Callable[[cst_tools.FreshNames], str],
                  keep: Callable[[str, str], bool] = lambda function, name: True,
                  ) -> tuple[str, list[tuple[str, str, str]]] | None:
    """Rename every eligible local of every function in ``source``.

    ``next_name(fresh)`` draws a new name (``fresh`` guarantees no collision with any word in
    the source, nor with an earlier new name, so the mapping back is unambiguous);
    ``keep(function_name, old)`` may decline some locals. Returns ``(new_source, renames)``
    where ``renames`` lists ``(function_name, old, new)`` in source order, or None when
    nothing was renamed or the bytecode proof failed.
    """
    module = cst_tools.parse_cst(source)
    original = _compile(source)
    if module is None or original is None:
        return None
    wrapper = meta.MetadataWrapper(module, unsafe_skip_copy=True)
    scopes = wrapper.resolve(meta.ScopeProvider)
    dynamic = cst_tools.dynamic_functions(module)
    fresh = cst_tools.FreshNames(cst_tools.taken_names(source))
    function_scopes = {}
    for scope in set(scopes.values()):
        if isinstance(scope, meta.FunctionScope) and isinstance(scope.node, cst.FunctionDef):
            function_scopes[id(scope.node)] = scope
    targets: dict[int, str] = {}
    renames = []
    order: dict[int, int] = {}

    class _Order(cst.CSTVisitor):
        def visit_Name(self, node):
            order[id(node)] = len(order)

    module.visit(_Order())

    class _Walk(cst.CSTVisitor):  # visits functions in source order, so names are stable
        def visit_FunctionDef(self, node):
            scope = function_scopes.get(id(node))
            if scope is None or id(node) in dynamic:
                return
            for old, nodes in _renamable(scope, _param_names(node), order).items():
                if not keep(node.name.value, old):
                    continue
                new = next_name(fresh)
                renames.append((node.name.value, old, new))
                targets.update((id(n), new) for n in nodes)

    module.visit(_Walk())
    if not renames:
        return None
    new_source = module.visit(_Rename(targets)).code
    compiled = _compile(new_source)
    back = {new: old for _, old, new in renames}
    if compiled is None or not same_bytecode(original, compiled, back):
        return None
    return new_source, renames


def rename_variables(source: str, rng: random.Random) -> str | None:
    """Rename locals with a naming scheme picked by ``rng`` (generic words or short letters)."""
    scheme = rng.choice((GENERIC, SHORT))
    out = rename_locals(source, namer(scheme, rng))
    return None if out is None else out[0]
