"""Which programming language a file holds: its extension, else its shebang line.

A shebang wins over the extension when both are known and disagree (`tool.py` starting
with `#!/bin/sh` is a shell script). The Python content check, `ast.parse`, runs in
`quality.py` because its tree is needed there too: a `.py` file that does not parse
stays "python" here and is dropped (and counted) as `quality/parse_error`.
"""
from __future__ import annotations

import os
import re

EXTENSIONS = {
    ".py": "python", ".pyw": "python", ".pyi": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".tsx": "typescript",
    ".java": "java", ".kt": "kotlin", ".scala": "scala",
    ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp",
    ".cs": "csharp", ".go": "go", ".rs": "rust", ".rb": "ruby", ".php": "php", ".swift": "swift",
    ".sh": "shell", ".bash": "shell", ".lua": "lua", ".r": "r", ".jl": "julia", ".sql": "sql",
}
# Interpreter name in a shebang (`#!/usr/bin/env python3.11`, `#!/bin/bash -e`) -> language.
INTERPRETERS = {"python": "python", "pypy": "python", "node": "javascript", "nodejs": "javascript",
                "sh": "shell", "bash": "shell", "zsh": "shell", "dash": "shell", "ruby": "ruby",
                "perl": "perl", "lua": "lua", "php": "php", "Rscript": "r", "julia": "julia"}

_SHEBANG = re.compile(r"#![ \t]*(\S+)(?:[ \t]+(\S+))?")
_VERSION_SUFFIX = re.compile(r"[\d.]+$")


def language_of_path(path: str) -> str | None:
    return EXTENSIONS.get(os.path.splitext(path)[1].lower())


def extensions_of(languages) -> frozenset[str]:
    """File extensions that can hold one of `languages` (collection lists only these)."""
    return frozenset(ext for ext, lang in EXTENSIONS.items() if lang in set(languages))


def shebang_language(text: str) -> str | None:
    """The language a `#!` first line names, or None."""
    match = _SHEBANG.match(text[:200])
    if not match:
        return None
    program = os.path.basename(match.group(1))
    if program == "env" and match.group(2):  # #!/usr/bin/env python3
        program = match.group(2)
    name = _VERSION_SUFFIX.sub("", program) or program  # python3.11 -> python
    return INTERPRETERS.get(name)


def detect_language(path: str, text: str) -> str:
    """The file's language, or "unknown"."""
    return shebang_language(text) or language_of_path(path) or "unknown"
