"""Targeted secure rewrites: the insecure idiom bandit found -> the secure one, as exact source edits.

    fixed = secure_rewrite(code)        # None when no rule changed anything
    fixed, ids = secure_rewrite(code), remaining_ids(fixed)

Each rule finds its calls in the AST and replaces their source spans (positions from `ast`), so the
rest of the file keeps its formatting. The rules and the bandit tests they answer:

| bandit | insecure                                 | rewrite                                           |
|--------|------------------------------------------|---------------------------------------------------|
| B307   | eval(s)                                  | ast.literal_eval(s)                               |
| B602/4 | subprocess.*(cmd, shell=True)            | subprocess.*(shlex.split(cmd), shell=False)       |
| B605   | os.system(cmd) / os.popen(cmd)           | subprocess.run(shlex.split(cmd)) / its stdout     |
| B506   | yaml.load(s, ...)                        | yaml.safe_load(s)                                 |
| B301   | pickle.load(s) / pickle.loads(s)         | json.load(s) / json.loads(s)                      |
| B324   | hashlib.md5 / sha1                       | hashlib.sha256                                    |
| B311   | random.<f>(...)                          | secrets.SystemRandom().<f>(...)                   |
| B105/6 | password = "literal", f(password="...")  | os.environ["PASSWORD"]                            |
| B608   | execute(f"... '{x}' ...")               | execute("... ? ...", (x,))                        |
| B501   | verify=False                             | verify=True                                       |
| B113   | requests.<verb>(url) without timeout     | requests.<verb>(url, timeout=30)                  |
| B104   | "0.0.0.0"                                | "127.0.0.1"                                       |
| B108   | "/tmp/name"                              | os.path.join(tempfile.mkdtemp(), "name")          |

A rewrite keeps the code's intent for the usual case, not every case (pickle -> json cannot carry
arbitrary objects); the constitutional job re-checks each with bandit and the task's tests and
rejects a rewrite that breaks them. An unused `import pickle` left behind is removed.
"""
from __future__ import annotations

import ast
import re

_SECRET_NAME = re.compile(r"(pass(word|wd)?|pwd|secret|token|api_?key)", re.I)
_RANDOM_FUNCS = {"random", "randint", "randrange", "choice", "choices", "shuffle", "sample", "uniform", "getrandbits"}
_REQUESTS_VERBS = {"get", "post", "put", "delete", "patch", "head", "request"}


def _span(lines_offsets: list[int], node: ast.AST) -> tuple[int, int]:
    return (lines_offsets[node.lineno - 1] + node.col_offset, lines_offsets[node.end_lineno - 1] + node.end_col_offset)


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _sql_params(node: ast.JoinedStr, src) -> tuple[str, list[str]] | None:
    """An f-string query -> (a '?'-placeholder literal, the parameter expressions), quotes around values dropped."""
    parts, params = [], []
    for v in node.values:
        if isinstance(v, ast.Constant):
            parts.append(str(v.value))
        elif isinstance(v, ast.FormattedValue) and v.conversion == -1 and v.format_spec is None:
            parts.append("\0")
            params.append(src(v.value))
        else:
            return None
    text = "".join(parts)
    text = re.sub(r"(['\"])\0\1", "\0", text)  # '{name}' -> ?
    if not params:
        return None
    return repr(text.replace("\0", "?")), params


def _edits(tree: ast.AST, code: str, offsets: list[int]) -> tuple[list[tuple[int, int, str]], set[str]]:
    """(start, end, replacement) edits and the modules the replacements need imported."""
    src = lambda n: code[slice(*_span(offsets, n))]  # noqa: E731
    edits, imports = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            kw = {k.arg: k for k in node.keywords if k.arg}
            if name == "eval" and node.args:
                edits.append((*_span(offsets, node.func), "ast.literal_eval"))
                imports.add("ast")
            elif name.startswith("subprocess.") and "shell" in kw and isinstance(kw["shell"].value, ast.Constant) \
                    and kw["shell"].value.value is True:
                edits.append((*_span(offsets, kw["shell"].value), "False"))
                if node.args and not isinstance(node.args[0], (ast.List, ast.Tuple)):
                    edits.append((*_span(offsets, node.args[0]), f"shlex.split({src(node.args[0])})"))
                    imports.add("shlex")
            elif name in ("os.system", "os.popen") and node.args:
                cmd = f"shlex.split({src(node.args[0])})"
                new = (f"subprocess.run({cmd}, check=False).returncode" if name == "os.system" else
                       f"io.StringIO(subprocess.run({cmd}, capture_output=True, text=True, check=False).stdout)")
                edits.append((*_span(offsets, node), new))
                imports |= {"subprocess", "shlex"} | ({"io"} if name == "os.popen" else set())
            elif name == "yaml.load" and node.args:
                edits.append((*_span(offsets, node), f"yaml.safe_load({src(node.args[0])})"))
            elif name in ("pickle.load", "pickle.loads", "cPickle.loads", "cPickle.load") and node.args:
                edits.append((*_span(offsets, node), f"json.{name.split('.')[1]}({src(node.args[0])})"))
                imports.add("json")
            elif name in ("hashlib.md5", "hashlib.sha1"):
                edits.append((*_span(offsets, node.func), "hashlib.sha256"))
                if "usedforsecurity" in kw:
                    edits.append((*_span(offsets, kw["usedforsecurity"].value), "True"))
            elif name.startswith("random.") and name.split(".")[1] in _RANDOM_FUNCS:
                edits.append((*_span(offsets, node.func), f"secrets.SystemRandom().{name.split('.')[1]}"))
                imports.add("secrets")
            elif name.endswith(".execute") and node.args and isinstance(node.args[0], ast.JoinedStr) \
                    and len(node.args) == 1:
                sql = _sql_params(node.args[0], src)
                if sql:
                    edits.append((*_span(offsets, node.args[0]), f"{sql[0]}, ({', '.join(sql[1])},)"))
            if name.startswith("requests.") and name.split(".")[1] in _REQUESTS_VERBS:
                if "verify" in kw and isinstance(kw["verify"].value, ast.Constant) and kw["verify"].value.value is False:
                    edits.append((*_span(offsets, kw["verify"].value), "True"))
                if "timeout" not in kw and node.args:
                    edits.append((*_span(offsets, node.args[-1]), f"{src(node.args[-1])}, timeout=30"))
            for k in node.keywords:  # B106: f(password="literal")
                if k.arg and _SECRET_NAME.search(k.arg) and isinstance(k.value, ast.Constant) \
                        and isinstance(k.value.value, str) and k.value.value:
                    edits.append((*_span(offsets, k.value), f'os.environ["{k.arg.upper()}"]'))
                    imports.add("os")
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str) and node.value.value:
            target = node.targets[0]
            tname = target.id if isinstance(target, ast.Name) else target.attr if isinstance(target, ast.Attribute) \
                else ""
            if tname and _SECRET_NAME.search(tname):  # B105
                edits.append((*_span(offsets, node.value), f'os.environ["{tname.upper()}"]'))
                imports.add("os")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value == "0.0.0.0":
                edits.append((*_span(offsets, node), '"127.0.0.1"'))
            elif node.value.startswith(("/tmp/", "/var/tmp/")) and len(node.value.split("/")) > 2:
                rest = node.value.split("/", 2)[2] if node.value.startswith("/tmp/") else node.value.split("/", 3)[3]
                edits.append((*_span(offsets, node), f"os.path.join(tempfile.mkdtemp(), {rest!r})"))
                imports |= {"os", "tempfile"}
    return edits, imports


def _apply(code: str, edits: list[tuple[int, int, str]]) -> str:
    out, last = [], len(code)
    for start, end, new in sorted(set(edits), key=lambda e: (e[0], -e[1]), reverse=True):
        if end > last:  # overlaps an edit already applied (a nested call rewritten whole): skip it
            continue
        out.append(code[end:last])
        out.append(new)
        last = start
    out.append(code[:last])
    return "".join(reversed(out))


def _add_imports(code: str, modules: set[str], tree: ast.Module) -> str:
    have = {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    missing = sorted(m for m in modules if m not in have)
    if not missing:
        return code
    # after a module docstring and any __future__ imports
    lines = code.splitlines(keepends=True)
    at = 0
    for n in tree.body:
        is_doc = isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
        if (is_doc and n is tree.body[0]) or (isinstance(n, ast.ImportFrom) and n.module == "__future__"):
            at = n.end_lineno
        else:
            break
    return "".join(lines[:at] + [f"import {m}\n" for m in missing] + lines[at:])


def _drop_unused_pickle(code: str) -> str:
    tree = ast.parse(code)
    used = any(isinstance(n, ast.Name) and n.id in ("pickle", "cPickle") for n in ast.walk(tree))
    if used:
        return code
    lines = code.splitlines(keepends=True)
    for n in tree.body:
        if isinstance(n, ast.Import) and all(a.name in ("pickle", "cPickle") for a in n.names):
            lines[n.lineno - 1] = ""
    return "".join(lines)


def secure_rewrite(code: str) -> str | None:
    """The code with every rule above applied, or None when it does not parse or no rule applies."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    offsets, pos = [], 0
    for line in code.splitlines(keepends=True) or [""]:
        offsets.append(pos)
        pos += len(line)
    offsets.append(pos)
    edits, imports = _edits(tree, code, offsets)
    if not edits:
        return None
    new = _add_imports(_apply(code, edits), imports, tree)
    try:
        new = _drop_unused_pickle(new)
    except SyntaxError:
        return None
    return new if new != code else None
