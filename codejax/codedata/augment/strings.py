"""String-formatting rewrites: f-strings <-> ``str.format`` calls.

``fstring_to_format``: ``f"{a!r:>8} and {b}"`` becomes ``"{!r:>8} and {}".format(a, b)``.
Skipped: f-strings inside implicit concatenation, ``{x=}`` (prints the source text) and
nested replacement fields in a format spec (``{x:{width}}``).

``format_to_fstring``: ``"{0} {name}".format(a, name=b)`` becomes ``f"{a} {b}"``, with
``.attr`` and ``[key]`` accessors carried over. Only plain or raw literals are rewritten,
and only when the f-string would evaluate the same expressions the same number of times
in the same order: an argument that is not a name, literal or ``name.attr`` must be used
exactly once, and such arguments must be used in call order. Expressions that cannot sit
inside an f-string on Python 3.11 (a backslash, ``#``, the string's own quote, a newline)
are skipped. Every rewritten literal is checked: the f-string's parsed pieces must equal
``string.Formatter().parse`` of the original literal's value, piece for piece.

Known gap: an f-string formats each value as soon as it is evaluated, whereas ``format``
evaluates all arguments first; this differs only if formatting one value has side effects
on the evaluation of another.
"""

from __future__ import annotations

import ast
import random
import string

import libcst as cst

from codejax.codedata.augment import cst_tools

_CONVERSIONS = {None: -1, "s": ord("s"), "r": ord("r"), "a": ord("a")}
_SIMPLE = (cst.Name, cst.Integer, cst.Float, cst.SimpleString)
_TIGHT = (cst.Name, cst.Attribute, cst.Call, cst.Subscript, cst.Integer, cst.Float, cst.SimpleString)


def _pieces_from_formatter(value: str) -> list | None:
    """What ``format`` makes of ``value``: literal texts and (conversion, spec) fields."""
    out: list = []
    try:
        for literal, field, spec, conversion in string.Formatter().parse(value):
            if literal:
                out.append(("text", literal))
            if field is not None:
                if "{" in (spec or ""):
                    return None
                out.append(("field", _CONVERSIONS.get(conversion, -2), spec or ""))
    except ValueError:
        return None
    return _merge(out)


def _pieces_from_fstring(text: str) -> list | None:
    try:
        node = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError):
        return None
    if not isinstance(node, ast.JoinedStr):
        return [("text", node.value)] if isinstance(node, ast.Constant) else None
    out: list = []
    for part in node.values:
        if isinstance(part, ast.Constant):
            out.append(("text", part.value))
        else:
            spec = ""
            if part.format_spec is not None:
                if not all(isinstance(p, ast.Constant) for p in part.format_spec.values):
                    return None
                spec = "".join(p.value for p in part.format_spec.values)
            out.append(("field", part.conversion, spec))
    return _merge(out)


def _merge(pieces: list) -> list:
    merged: list = []
    for piece in pieces:
        if piece[0] == "text" and merged and merged[-1][0] == "text":
            merged[-1] = ("text", merged[-1][1] + piece[1])
        else:
            merged.append(piece)
    return merged


# --------------------------------------------------------------------------- f -> format

class _FStringToFormat(cst_tools.SiteTransformer):
    def __init__(self, selected, count_only):
        super().__init__(selected, count_only)
        self.concatenated: set[int] = set()

    def visit_ConcatenatedString(self, node):
        for side in (node.left, node.right):
            self.concatenated.add(id(side))

    def leave_FormattedString(self, original_node, updated_node):
        if id(original_node) in self.concatenated:
            return updated_node
        template, args = [], []
        for part in updated_node.parts:
            if isinstance(part, cst.FormattedStringText):
                template.append(part.value)
                continue
            spec = part.format_spec or []
            if part.equal is not None or not all(isinstance(p, cst.FormattedStringText) for p in spec):
                return updated_node
            spec_text = "".join(p.value for p in spec)
            if "{" in spec_text or "}" in spec_text:
                return updated_node
            conversion = f"!{part.conversion}" if part.conversion else ""
            template.append("{" + conversion + (f":{spec_text}" if part.format_spec is not None else "") + "}")
            expr = part.expression
            if isinstance(expr, cst.Tuple) and not expr.lpar:
                expr = cst_tools.paren(expr)
            args.append(expr)
        if not self.take():
            return updated_node
        prefix = updated_node.prefix.replace("f", "").replace("F", "")
        quote = updated_node.quote
        body = "".join(template)
        if not args:  # nothing to format: a plain literal, with the doubled braces undone
            return cst.SimpleString(prefix + quote + body.replace("{{", "{").replace("}}", "}") + quote,
                                    lpar=updated_node.lpar, rpar=updated_node.rpar)
        literal = cst.SimpleString(prefix + quote + body + quote)
        return cst.Call(func=cst.Attribute(value=literal, attr=cst.Name("format")),
                        args=[cst.Arg(a) for a in args], lpar=updated_node.lpar, rpar=updated_node.rpar)


def fstring_to_format(source: str, rng: random.Random) -> str | None:
    """Rewrite f-strings as ``str.format`` calls (see the module doc for what is skipped)."""
    return cst_tools.run_sites(_FStringToFormat, source, rng)


# --------------------------------------------------------------------------- format -> f

def _split_field(field: str) -> tuple[str, str | None, str | None] | None:
    """``name[!conv][:spec]`` -> (name with accessors, conversion, spec); brackets respected."""
    depth = 0
    for i, ch in enumerate(field):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif depth == 0 and ch in "!:":
            name, rest = field[:i], field[i:]
            if ch == ":":
                return name, None, rest[1:]
            if len(rest) < 2 or rest[1] not in "sra" or (len(rest) > 2 and rest[2] != ":"):
                return None
            return name, rest[1], rest[3:] if len(rest) > 2 else None
    return field, None, None


def _scan(body: str, raw: bool) -> list | None:
    """Split a literal's source text into verbatim text and replacement fields (source form)."""
    out, text, i, n = [], [], 0, len(body)
    while i < n:
        ch = body[i]
        if ch == "\\" and not raw:
            if body.startswith("N{", i + 1):
                j = body.find("}", i)
                if j < 0:
                    return None
                text.append(body[i:j + 1])
                i = j + 1
            else:
                text.append(body[i:i + 2])
                i += 2
        elif body.startswith("{{", i) or body.startswith("}}", i):
            text.append(body[i:i + 2])
            i += 2
        elif ch == "{":
            j = body.find("}", i)
            if j < 0 or "{" in body[i + 1:j]:
                return None  # nested fields in a format spec
            out.append(("text", "".join(text)))
            text = []
            out.append(("field", body[i + 1:j]))
            i = j + 1
        elif ch == "}":
            return None
        else:
            text.append(ch)
            i += 1
    out.append(("text", "".join(text)))
    return out


class _FormatToFString(cst_tools.SiteTransformer):
    def __init__(self, module: cst.Module, selected, count_only):
        super().__init__(selected, count_only)
        self.module = module

    def leave_Call(self, original_node, updated_node):
        plan = self._plan(original_node)
        if plan is None or not self.take():
            return updated_node
        return cst.parse_expression(plan).with_changes(lpar=updated_node.lpar, rpar=updated_node.rpar)

    def _code(self, node: cst.CSTNode) -> str:
        return self.module.code_for_node(node)

    def _plan(self, call: cst.Call) -> str | None:
        func = call.func
        if not (isinstance(func, cst.Attribute) and func.attr.value == "format"
                and isinstance(func.value, cst.SimpleString)):
            return None
        literal = func.value
        prefix, quote = literal.prefix.lower(), literal.quote
        if prefix not in ("", "r") or any(a.star for a in call.args):
            return None
        positional = [a.value for a in call.args if a.keyword is None]
        keywords = {a.keyword.value: a.value for a in call.args if a.keyword is not None}
        if len(positional) + len(keywords) != len(call.args) or any(
                a.keyword is None for a in call.args[len(positional):]):
            return None
        pieces = _scan(literal.value[len(literal.prefix) + len(quote):-len(quote)], raw=prefix == "r")
        if pieces is None:
            return None
        other_quote = "'" if quote[0] == '"' else '"'
        parts, used, auto = [], [], 0
        manual = False
        for kind, text in pieces:
            if kind == "text":
                parts.append(text)
                continue
            split = _split_field(text)
            if split is None:
                return None
            name, conversion, spec = split
            head = name
            for mark in ".[":
                head = head.split(mark, 1)[0]
            accessors = name[len(head):]
            if head == "":
                if manual:
                    return None
                key, auto = auto, auto + 1
            elif head.isdigit():
                if auto:
                    return None
                manual, key = True, int(head)
            elif head.isidentifier():
                key = head
            else:
                return None
            arg = positional[key] if isinstance(key, int) and key < len(positional) else keywords.get(key)
            if arg is None:
                return None
            used.append(key)
            expr = self._expression(arg, accessors, other_quote)
            if expr is None or any(bad in expr for bad in ("\\", "#", "\n", "\r", quote[0])):
                return None
            parts.append("{" + expr + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec is not None else "") + "}")
        if not used:
            return None
        # Arguments that are not plain names/literals must be evaluated once, in call order.
        order = list(range(len(positional))) + list(keywords)
        values = {**dict(enumerate(positional)), **keywords}
        complex_used = [k for k in used if not self._simple(values[k])]
        complex_all = [k for k in order if not self._simple(values[k])]
        if complex_used != complex_all:
            return None
        text = "f" + literal.prefix + quote + "".join(parts) + quote
        expected = _pieces_from_formatter(ast.literal_eval(self._code(literal)))
        return text if expected is not None and _pieces_from_fstring(text) == expected else None

    def _simple(self, node: cst.BaseExpression) -> bool:
        while isinstance(node, cst.Attribute):
            node = node.value
        return isinstance(node, _SIMPLE)

    def _expression(self, arg: cst.BaseExpression, accessors: str, other_quote: str) -> str | None:
        code = self._code(arg).strip()
        if accessors and not (isinstance(arg, _TIGHT) or arg.lpar):
            code = f"({code})"
        elif not accessors and (not isinstance(arg, _TIGHT) and not arg.lpar) and (
                ":" in code or "!" in code or code.startswith("{") or isinstance(arg, (cst.Tuple, cst.Lambda, cst.NamedExpr))):
            code = f"({code})"
        i = 0
        while i < len(accessors):
            if accessors[i] == ".":
                j = i + 1
                while j < len(accessors) and accessors[j] not in ".[":
                    j += 1
                attr = accessors[i + 1:j]
                if not attr.isidentifier():
                    return None
                code += "." + attr
                i = j
            elif accessors[i] == "[":
                j = accessors.find("]", i)
                if j < 0:
                    return None
                key = accessors[i + 1:j]
                if key.isdigit():
                    code += f"[{int(key)}]"
                elif key and "'" not in key and '"' not in key and "\\" not in key:
                    code += f"[{other_quote}{key}{other_quote}]"
                else:
                    return None
                i = j + 1
            else:
                return None
        if code.startswith("{"):
            code = " " + code  # '{{' would read as an escaped brace
        return code


def format_to_fstring(source: str, rng: random.Random) -> str | None:
    """Rewrite ``"...".format(...)`` calls on plain literals as f-strings (see the module doc)."""
    module = cst_tools.parse_cst(source)
    if module is None:
        return None
    return cst_tools.run_sites(lambda sel, count: _FormatToFString(module, sel, count), source, rng)
