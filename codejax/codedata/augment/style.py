"""Style transforms that leave the program's AST alone or change only its documentation.

Each one edits the libcst tree (so everything it does not touch keeps its exact text) and
checks its result on the stdlib AST:

* ``remove_comments`` / ``add_comments``: the AST must be identical.
* ``remove_docstrings`` / ``add_docstrings``: the AST must equal the original's after the
  same docstrings are removed on the AST side.
* ``strip_annotations`` (the type-inference task's input): the AST must equal the
  original's with the same annotations removed.

Added comments and docstrings come from templates (the statement kind and the code it
touches; the function's name and signature). They read plainly and say nothing false,
but they are not a model's prose: the point is to vary comment and docstring presence.
"""

from __future__ import annotations

import ast
import random
import re

import libcst as cst

from codejax.codedata.augment import cst_tools

_KEEP_COMMENT = re.compile(r"#!|#.*coding[:=]|#\s*type:")  # shebang, encoding, type comments


# --------------------------------------------------------------------------- comments

class _RemoveComments(cst.CSTTransformer):
    def leave_EmptyLine(self, original_node, updated_node):
        if updated_node.comment is None or _KEEP_COMMENT.match(updated_node.comment.value):
            return updated_node
        return cst.RemoveFromParent()

    def leave_TrailingWhitespace(self, original_node, updated_node):
        if updated_node.comment is None or _KEEP_COMMENT.match(updated_node.comment.value):
            return updated_node
        return updated_node.with_changes(comment=None, whitespace=cst.SimpleWhitespace(""))


def remove_comments(source: str, rng: random.Random) -> str | None:
    """Drop every comment (shebang, encoding and ``# type:`` comments excepted)."""
    module = cst_tools.parse_cst(source)
    if module is None:
        return None
    new = module.visit(_RemoveComments()).code
    if new == source or cst_tools.dump(new) != cst_tools.dump(source):
        return None
    return new


def _short(module: cst.Module, node: cst.CSTNode, limit: int = 40) -> str | None:
    text = " ".join(module.code_for_node(node).split())
    return text if len(text) <= limit else None


def _describe(module: cst.Module, stmt: cst.BaseStatement) -> str | None:
    """A one-line comment for ``stmt``, or None when it has no template."""
    if isinstance(stmt, cst.For):
        it = _short(module, stmt.iter)
        return f"Loop over {it}" if it else "Loop over the items"
    if isinstance(stmt, cst.While):
        test = _short(module, stmt.test)
        return f"Repeat while {test}" if test else "Repeat until the condition fails"
    if isinstance(stmt, cst.If):
        if isinstance(stmt.test, cst.UnaryOperation) and isinstance(stmt.test.operator, cst.Not):
            inner = _short(module, stmt.test.expression)
            return f"Handle an empty or false {inner}" if inner else "Handle the special case"
        test = _short(module, stmt.test)
        return f"Check whether {test}" if test else "Handle the special case"
    if isinstance(stmt, cst.Try):
        return "Guard against errors"
    if isinstance(stmt, cst.With):
        return "Enter the context"
    if not isinstance(stmt, cst.SimpleStatementLine) or len(stmt.body) != 1:
        return None
    small = stmt.body[0]
    if isinstance(small, cst.Return):
        value = small.value and _short(module, small.value, 30)
        return f"Return {value}" if value else "Return the result"
    if isinstance(small, cst.Assign) and len(small.targets) == 1 and isinstance(small.targets[0].target, cst.Name):
        return f"Compute {small.targets[0].target.value}"
    if isinstance(small, cst.AugAssign) and isinstance(small.target, cst.Name):
        return f"Update {small.target.value}"
    if isinstance(small, cst.Raise):
        return "Report the error to the caller"
    if isinstance(small, cst.Expr) and isinstance(small.value, cst.Call):
        func = _short(module, small.value.func, 30)
        return f"Call {func}" if func else None
    return None


class _AddComments(cst_tools.SiteTransformer):
    """Adds a comment line above statements in indented blocks that have none yet."""

    def __init__(self, module: cst.Module, selected, count_only):
        super().__init__(selected, count_only)
        self.module = module

    def leave_IndentedBlock(self, original_node, updated_node):
        body = []
        for stmt in updated_node.body:
            text = _describe(self.module, stmt)
            if text and not any(line.comment for line in stmt.leading_lines) and self.take():
                line = cst.EmptyLine(indent=True, comment=cst.Comment(f"# {text}"))
                stmt = stmt.with_changes(leading_lines=[*stmt.leading_lines, line])
            body.append(stmt)
        return updated_node.with_changes(body=body)


def add_comments(source: str, rng: random.Random) -> str | None:
    """Put a template comment above about half of the commentless statements in blocks."""
    module = cst_tools.parse_cst(source)
    if module is None:
        return None
    new = cst_tools.run_sites(lambda sel, count: _AddComments(module, sel, count), source, rng, fraction=0.5)
    if new is None or cst_tools.dump(new) != cst_tools.dump(source):
        return None
    return new


# --------------------------------------------------------------------------- docstrings

def _string_parts(value: cst.BaseExpression) -> list[cst.BaseExpression]:
    if isinstance(value, cst.ConcatenatedString):
        return _string_parts(value.left) + _string_parts(value.right)
    return [value]


def _is_docstring_expr(small: cst.BaseSmallStatement) -> bool:
    """True for a statement that Python would take as a docstring: a str literal (not bytes/f)."""
    return isinstance(small, cst.Expr) and all(
        isinstance(p, cst.SimpleString) and "b" not in p.prefix.lower() for p in _string_parts(small.value))


def _is_docstring(stmt: cst.BaseStatement) -> bool:
    return isinstance(stmt, cst.SimpleStatementLine) and bool(stmt.body) and _is_docstring_expr(stmt.body[0])


def _drop_docstring(body: list[cst.BaseStatement], empty_ok: bool) -> list[cst.BaseStatement] | None:
    """``body`` without its docstring statement (``pass`` if nothing is left); None if none."""
    if not body or not _is_docstring(body[0]):
        return None
    first = body[0]
    rest = [first.with_changes(body=first.body[1:])] if len(first.body) > 1 else []  # '"""doc"""; x = 1'
    rest += list(body[1:])
    if rest and first.leading_lines:  # keep comments that sat above the docstring
        rest[0] = rest[0].with_changes(leading_lines=[*first.leading_lines, *rest[0].leading_lines])
    if not rest and not empty_ok:
        rest = [cst.SimpleStatementLine(body=[cst.Pass()])]
    return rest


class _RemoveDocstrings(cst.CSTTransformer):
    def __init__(self):
        super().__init__()
        self.removed = 0

    def _strip(self, node):
        body = node.body
        if isinstance(body, cst.SimpleStatementSuite):  # 'def f(): "doc"; return 1'
            if not body.body or not _is_docstring_expr(body.body[0]):
                return node
            self.removed += 1
            return node.with_changes(body=body.with_changes(body=list(body.body[1:]) or [cst.Pass()]))
        new_body = _drop_docstring(list(body.body), empty_ok=False)
        if new_body is None:
            return node
        self.removed += 1
        return node.with_changes(body=body.with_changes(body=new_body))

    def leave_FunctionDef(self, original_node, updated_node):
        return self._strip(updated_node)

    def leave_ClassDef(self, original_node, updated_node):
        return self._strip(updated_node)

    def leave_Module(self, original_node, updated_node):
        new_body = _drop_docstring(list(updated_node.body), empty_ok=True)
        if new_body is None:
            return updated_node
        self.removed += 1
        return updated_node.with_changes(body=new_body)


def strip_docstrings_ast(tree: ast.Module) -> str:
    """``ast.dump`` of ``tree`` with module, class and function docstrings removed (in place)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or ([] if isinstance(node, ast.Module) else [ast.Pass()])
    return ast.dump(tree)


def remove_docstrings(source: str, rng: random.Random) -> str | None:
    """Remove module, class and function docstrings (an emptied body gets ``pass``)."""
    module = cst_tools.parse_cst(source)
    if module is None:
        return None
    transformer = _RemoveDocstrings()
    new = module.visit(transformer).code
    if not transformer.removed or new == source:
        return None
    if cst_tools.dump(new) != strip_docstrings_ast(ast.parse(source)):
        return None
    return new


_VERB_PREFIXES = {
    "get": "Return the {}.", "set": "Set the {}.", "is": "Return whether it is {}.",
    "has": "Return whether it has {}.", "to": "Convert to {}.", "make": "Make the {}.",
    "build": "Build the {}.", "create": "Create the {}.", "compute": "Compute the {}.",
    "find": "Find the {}.", "check": "Check the {}.", "read": "Read the {}.", "write": "Write the {}.",
    "parse": "Parse the {}.", "load": "Load the {}.", "update": "Update the {}.",
    "add": "Add the {}.", "remove": "Remove the {}.", "count": "Count the {}.",
}


def _words(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name.strip("_"))
    return [w.lower() for w in spaced.split("_") if w]


def summary_from_name(name: str, returns_value: bool) -> str:
    """A one-sentence summary from a function's name: ``get_user_id`` -> "Return the user id."."""
    words = _words(name)
    if not words:
        return "Run the operation."
    head, rest = words[0], " ".join(words[1:])
    if head in _VERB_PREFIXES and rest:
        return _VERB_PREFIXES[head].format(rest)
    if len(words) == 1:
        return f"Return the {head}." if returns_value else f"Perform the {head} step."
    return f"{head.capitalize()} {rest}."


def _returns_value(fn: cst.FunctionDef) -> bool:
    found = False

    class _Find(cst.CSTVisitor):
        def visit_FunctionDef(self, node):
            return node is fn  # a nested def's returns are its own

        def visit_Lambda(self, node):
            return False

        def visit_Return(self, node):
            nonlocal found
            if node.value is not None and not (isinstance(node.value, cst.Name) and node.value.value == "None"):
                found = True

    fn.visit(_Find())
    return found


def _docstring_text(module: cst.Module, fn: cst.FunctionDef, indent: str) -> str | None:
    """A Google-style docstring for ``fn`` laid out for a body indented by ``indent``."""
    returns = _returns_value(fn) or fn.returns is not None
    lines = [summary_from_name(fn.name.value, returns)]
    p = fn.params
    params = [q for q in (*p.posonly_params, *p.params, *p.kwonly_params) if q.name.value not in ("self", "cls")]
    for star, prefix in ((p.star_arg, "*"), (p.star_kwarg, "**")):
        if isinstance(star, cst.Param):
            params.append(star.with_changes(name=cst.Name(star.name.value), star=""))
    if params:
        lines += ["", "Args:"]
        for q in params:
            ann = f" ({_short_annotation(module, q.annotation)})" if q.annotation else ""
            default = " Defaults to {}.".format(_short(module, q.default, 30)) if q.default is not None and _short(module, q.default, 30) else ""
            lines.append(f"    {q.name.value}{ann}: The {' '.join(_words(q.name.value)) or q.name.value}.{default}")
    if returns and fn.returns is not None:
        lines += ["", "Returns:", f"    {_short_annotation(module, fn.returns)}: The result."]
    elif returns:
        lines += ["", "Returns:", "    The result."]
    text = "\n".join(lines)
    if '"""' in text or "\\" in text or text.endswith('"'):
        return None
    if len(lines) == 1:
        return f'"""{text}"""'
    body = "\n".join((indent + line) if line else "" for line in lines[1:])
    return f'"""{lines[0]}\n{body}\n{indent}"""'


def _short_annotation(module: cst.Module, annotation: cst.Annotation) -> str:
    return " ".join(module.code_for_node(annotation.annotation).split())


class _AddDocstrings(cst.CSTTransformer):
    """Gives every function without a docstring (and with an indented body) a template one."""

    def __init__(self, module: cst.Module):
        super().__init__()
        self.module = module
        self.indents = [""]
        self.added = 0

    def visit_IndentedBlock(self, node):
        self.indents.append(self.indents[-1] + (node.indent if node.indent is not None else self.module.default_indent))

    def leave_IndentedBlock(self, original_node, updated_node):
        self.indents.pop()
        return updated_node

    def leave_FunctionDef(self, original_node, updated_node):
        body = updated_node.body
        if not isinstance(body, cst.IndentedBlock) or (body.body and _is_docstring(body.body[0])):
            return updated_node
        indent = self.indents[-1] + (body.indent if body.indent is not None else self.module.default_indent)
        text = _docstring_text(self.module, original_node, indent)
        if text is None:
            return updated_node
        doc = cst.SimpleStatementLine(body=[cst.Expr(cst.SimpleString(text))])
        self.added += 1
        return updated_node.with_changes(body=body.with_changes(body=[doc, *body.body]))


def add_docstrings(source: str, rng: random.Random) -> str | None:
    """Add a template docstring (summary from the name, Args, Returns) to undocumented functions."""
    module = cst_tools.parse_cst(source)
    if module is None:
        return None
    transformer = _AddDocstrings(module)
    new = module.visit(transformer).code
    if not transformer.added:
        return None
    new_tree = cst_tools.parse_ast(new)
    if new_tree is None:
        return None
    # Removing every docstring from both sides must give the same program.
    if strip_docstrings_ast(ast.parse(new)) != strip_docstrings_ast(ast.parse(source)):
        return None
    return new


# --------------------------------------------------------------------------- annotations

class _StripAnnotations(cst.CSTTransformer):
    def __init__(self, only: str | None):
        super().__init__()
        self.only = only
        self.depth = 0
        self.stripped = 0

    def visit_FunctionDef(self, node):
        self.depth += 1
        return True

    def leave_FunctionDef(self, original_node, updated_node):
        self.depth -= 1
        if self.only is not None and (self.depth or updated_node.name.value != self.only):
            return updated_node
        params = updated_node.params
        changed = False

        def strip(q):
            nonlocal changed
            if isinstance(q, cst.Param) and q.annotation is not None:
                changed = True
                if q.default is None:
                    return q.with_changes(annotation=None)
                # PEP 8 spaces '=' only when annotated: 'x: int = 1' becomes 'x=1'.
                tight = cst.AssignEqual(whitespace_before=cst.SimpleWhitespace(""),
                                        whitespace_after=cst.SimpleWhitespace(""))
                return q.with_changes(annotation=None, equal=tight)
            return q

        new_params = params.with_changes(
            posonly_params=[strip(q) for q in params.posonly_params],
            params=[strip(q) for q in params.params],
            kwonly_params=[strip(q) for q in params.kwonly_params],
            star_arg=strip(params.star_arg), star_kwarg=strip(params.star_kwarg))
        new = updated_node.with_changes(params=new_params)
        if updated_node.returns is not None:
            changed = True
            new = new.with_changes(returns=None)
        if changed:
            self.stripped += 1
        return new


def strip_annotations(source: str, function: str | None = None) -> str | None:
    """Remove parameter and return annotations (of top-level ``function`` only, if named)."""
    module = cst_tools.parse_cst(source)
    if module is None:
        return None
    transformer = _StripAnnotations(function)
    new = module.visit(transformer).code
    if not transformer.stripped:
        return None
    expected = ast.parse(source)
    for node in ast.walk(expected):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                function is None or (node.name == function and node in expected.body)):
            node.returns = None
            for arg in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs,
                        node.args.vararg, node.args.kwarg):
                if arg is not None:
                    arg.annotation = None
    return new if cst_tools.dump(new) == ast.dump(expected) else None
