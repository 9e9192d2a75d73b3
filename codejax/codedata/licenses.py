"""Licenses: SPDX header lines, LICENSE/COPYING files, and the allow-list check.

A file's license is, in order of precedence: its own `SPDX-License-Identifier:` line,
its repository's license file (classified here by keyword fingerprints), the `license`
field of a dataset row, else "unknown".

License files are classified by phrases that only their license's text contains. The
order of the checks matters: the PSF license text recounts Python's history with the GPL,
the LGPL quotes the GPL's name and the GPL-3.0 quotes the AGPL's, so PSF is checked first
and the GNU family only by the first title near the top of the file.

Allow-list matching ignores case and the `-only` / `-or-later` / `+` suffixes
(`GPL-2.0-or-later` matches an allow-list entry `GPL-2.0`). SPDX expressions are
honoured: `MIT OR GPL-3.0` is allowed if either side is, `MIT AND GPL-3.0` only if both are;
a `WITH <exception>` clause is ignored.
"""
from __future__ import annotations

import os
import re

UNKNOWN = "unknown"
# Permissive licenses; GPL, LGPL, AGPL and MPL are left out (copyleft), as in The Stack.
DEFAULT_ALLOW = ("MIT", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "ISC", "0BSD", "Unlicense",
                 "CC0-1.0", "PSF-2.0", "Zlib")
# Names a repository's license file goes by, checked at the repository root only.
LICENSE_FILE_NAMES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENSE.rst", "LICENCE", "LICENCE.txt",
                      "LICENCE.md", "COPYING", "COPYING.txt", "COPYING.md", "LICENSE-MIT", "LICENSE-APACHE")

_SPDX = re.compile(r"SPDX-License-Identifier:[ \t]*([^\n\r]*)")
_SPDX_END = re.compile(r"\s*(\*/|-->|#}|\"\"\"|''').*$")  # closers of the comment the header sits in
_HEAD_CHARS = 600  # the GPL family is recognised by its title, which comes first

# (SPDX id, phrases that must all occur, whether only the head of the text counts), checked
# in order before the GNU family ...
_BEFORE_GNU = (
    ("PSF-2.0", ("python software foundation license",), False),
    ("Unlicense", ("free and unencumbered software released into the public domain",), False),
    ("CC0-1.0", ("cc0 1.0 universal",), False),
    ("Apache-2.0", ("apache license", "version 2.0"), True),
    ("Apache-2.0", ("licensed under the apache license, version 2.0",), False),
    ("MPL-2.0", ("mozilla public license", "2.0"), True),
)
# ... and after it.
_AFTER_GNU = (
    ("MIT", ("permission is hereby granted, free of charge, to any person obtaining a copy",), False),
    ("BSD-3-Clause", ("redistribution and use in source and binary forms", "endorse or promote"), False),
    ("BSD-2-Clause", ("redistribution and use in source and binary forms",), False),
    ("ISC", ("permission to use, copy, modify, and/or distribute this software for any purpose",
             "provided that the above copyright notice"), False),
    ("0BSD", ("permission to use, copy, modify, and/or distribute this software for any purpose",), False),
    ("Zlib", ("altered source versions must be plainly marked as such",), False),
)


# The GNU family by title; the first title in the head wins (the GPL-3.0 text names the
# AGPL in its section 13, the LGPL names the GPL throughout).
_GNU_TITLES = (("gnu affero general public license", "AGPL", ("3",)),
               ("gnu lesser general public license", "LGPL", ("3", "2.1")),
               ("gnu library general public license", "LGPL", ("2",)),
               ("gnu general public license", "GPL", ("3", "2", "1")))


def _gnu_license(head: str) -> str | None:
    found = [(head.find(title), family, versions) for title, family, versions in _GNU_TITLES if title in head]
    if not found:
        return None
    _, family, versions = min(found)
    version = next((v for v in versions if f"version {v}" in head), versions[0])
    return f"{family}-{version if '.' in version else version + '.0'}"


def classify_license_text(text: str) -> str:
    """The SPDX id of a license file's text, or "unknown"."""
    flat = " ".join(text.lower().split())
    head = flat[:_HEAD_CHARS]
    for spdx, phrases, head_only in _BEFORE_GNU:
        if all(p in (head if head_only else flat) for p in phrases):
            return spdx
    gnu = _gnu_license(head)
    if gnu:
        return gnu
    for spdx, phrases, head_only in _AFTER_GNU:
        if all(p in (head if head_only else flat) for p in phrases):
            return spdx
    return UNKNOWN


def find_license_file(root: str) -> str | None:
    """The first license file at `root`, by the order of LICENSE_FILE_NAMES."""
    for name in LICENSE_FILE_NAMES:
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    return None


def repo_license(root: str) -> tuple[str, str | None]:
    """(SPDX id or "unknown", license file name or None) for a source tree's root."""
    path = find_license_file(root)
    if path is None:
        return UNKNOWN, None
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return classify_license_text(f.read(200_000)), os.path.basename(path)
    except OSError:
        return UNKNOWN, os.path.basename(path)


def spdx_header(text: str, max_lines: int = 30) -> str | None:
    """The expression of an `SPDX-License-Identifier:` line in the first `max_lines` lines."""
    head = "\n".join(text.split("\n", max_lines)[:max_lines])
    match = _SPDX.search(head)
    if not match:
        return None
    expression = _SPDX_END.sub("", match.group(1)).strip()
    return expression or None


def _base_id(spdx: str) -> str:
    spdx = spdx.strip().lower()
    for suffix in ("-only", "-or-later", "+"):
        spdx = spdx.removesuffix(suffix)
    return spdx


def parse_allow_list(spec: str) -> frozenset[str]:
    return frozenset(_base_id(s) for s in spec.split(",") if s.strip())


def is_allowed(expression: str, allow: frozenset[str]) -> bool:
    """Whether an SPDX expression (or a single id) is allowed by `allow` (see the module doc)."""
    expression = re.sub(r"[()]", " ", expression)
    expression = re.sub(r"\s+WITH\s+\S+", " ", expression, flags=re.I)
    for alternative in re.split(r"\s+OR\s+", expression.strip(), flags=re.I):
        parts = [p for p in re.split(r"\s+AND\s+", alternative.strip(), flags=re.I) if p]
        if parts and all(_base_id(p) in allow for p in parts):
            return True
    return False


def file_license(text: str, inherited: str) -> str:
    """The license that applies to one file: its SPDX header, else `inherited`."""
    return spdx_header(text) or inherited or UNKNOWN
