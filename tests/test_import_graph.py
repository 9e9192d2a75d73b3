"""The import graph: no cycles between packages, no job imports another job, models imports nothing above it.

Every `import` in codejax/ counts, including the ones inside functions (a lazy import
still makes the packages depend on each other).
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "codejax"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """module -> the codejax modules it imports (a `from pkg import name` counts as pkg.name if that is a module)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules)
        graph[name] = {t for t in targets if t.split(".")[0] == "codejax" and t in modules}
    return graph


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]  # codejax.models.hf -> models; codejax.config -> config


def _package_graph() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for source, targets in _imports().items():
        out.setdefault(_package(source), set()).update(_package(t) for t in targets if _package(t) != _package(source))
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_real_imports():
    graph = _imports()
    assert "codejax.models.transformer" in graph["codejax.peft.api"]  # a top-level import
    assert "codejax.jobs" in graph["codejax.jobs.lm"]  # the registry


def test_no_cycles_between_packages():
    assert _cycles(_package_graph()) == []


def test_no_job_imports_another_job():
    offenders = {(s, t) for s, targets in _imports().items() if s.startswith("codejax.jobs.")
                 for t in targets if t.startswith("codejax.jobs.")}
    assert not offenders, f"jobs import other jobs: {sorted(offenders)}"


def test_models_import_nothing_above_them():
    above = {(s, t) for s, targets in _imports().items() if _package(s) == "models"
             for t in targets if _package(t) != "models"}
    assert not above, f"codejax.models imports {sorted(above)}"


def test_packages_do_not_import_the_top_level_modules():
    """config, main, evaluate and demo sit above every package, so the graph stays acyclic even
    when the top-level modules are counted as one node."""
    top = {m for m in _imports() if m.count(".") == 1 and not (PACKAGE / m.split(".")[1]).is_dir()}
    offenders = {(s, t) for s, targets in _imports().items() if s.count(".") >= 2 or s.split(".")[-1] in
                 {p.name for p in PACKAGE.iterdir() if p.is_dir()} for t in targets if t in top}
    assert top >= {"codejax.config", "codejax.main", "codejax.evaluate", "codejax.demo"}
    assert not offenders, f"packages import top-level modules: {sorted(offenders)}"
