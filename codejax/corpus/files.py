"""The stdlib's location, the one source-tree walker, and reading source files.

Every corpus in codejax (the tokenizer's, the quickstart's, the data pipeline's) lists
files with `walk_source_files`, so they agree on what counts as source: caches,
other interpreters' packages, VCS/tool directories (names starting with '.') and, unless
asked for, test directories are pruned; paths come back sorted by root-relative POSIX
path, so the order (and everything trained on it) does not depend on the filesystem's
directory listing order. Stdlib-only.
"""
from __future__ import annotations

import os
import sysconfig
from pathlib import Path

# Never descended into: caches, other interpreters' packages and VCS/tool state.
PRUNED_DIRS = frozenset({"__pycache__", "site-packages", "dist-packages", "node_modules"})
# Test directories (the stdlib's test/ is ~60% of its files); kept when include_tests.
TEST_DIRS = frozenset({"test", "tests", "idle_test"})


def stdlib_root() -> Path:
    """The running interpreter's stdlib directory (a venv's own lib dir holds no sources)."""
    return Path(sysconfig.get_paths()["stdlib"])


def pruned(part: str, include_tests: bool) -> bool:
    """Is a directory of this name left out of a walk?"""
    return part in PRUNED_DIRS or part.startswith(".") or (not include_tests and part in TEST_DIRS)


def walk_source_files(root: str | os.PathLike, extensions=frozenset({".py"}), include_tests: bool = False,
                      extensionless: bool = False) -> list[str]:
    """Root-relative POSIX paths of the files under `root` with one of `extensions` (lower-case,
    with the dot), plus files without an extension when `extensionless` (scripts with a shebang)."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise ValueError(f"root={root!r} is not a directory")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        # Pruning in place stops os.walk from descending into site-packages at all.
        dirnames[:] = [d for d in dirnames if not pruned(d, include_tests)]
        for name in filenames:
            ext = os.path.splitext(name)[1].lower()
            if ext in extensions or (extensionless and not ext and not name.startswith(".")):
                found.append(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
    return sorted(found)


def list_source_files(root: str | os.PathLike | None = None, include_tests: bool = False) -> list[Path]:
    """The ``.py`` files under ``root`` (default: the stdlib) as paths, in walk order."""
    root = stdlib_root() if root is None else Path(root)
    return [root / rel for rel in walk_source_files(root, include_tests=include_tests)]


def read_source(path: Path) -> tuple[str | None, str | None]:
    """Return ``(text, None)`` or ``(None, reason)``; never raises for a bad file."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return None, f"unreadable: {e.strerror or e}"
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as e:
        return None, f"not UTF-8: {e.reason} at byte {e.start}"
