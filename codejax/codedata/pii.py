"""PII removal: emails, public IP addresses and author names become placeholders.

    <EMAIL>        user@host.tld (addresses at RFC 2606 reserved domains such as
                   example.com, *.test, *.invalid and localhost are not anyone's, and are kept)
    <IP_ADDRESS>   IPv4/IPv6 addresses that are globally routable (`ipaddress`'s is_global):
                   127.0.0.1, 10.x, 192.168.x, documentation ranges and :: are kept, and
                   so is anything on a line that says "version" (1.2.3.4 there is a version)
    <NAME>         the names in `Author:` / `Authors:` / `Maintainer:` lines, after
                   `Written by` / `Contributed by` / `Created by`, the holder in
                   `Copyright (c) 2020 Jane Doe`, and capitalised names in `__author__`,
                   `__maintainer__` and `__credits__` strings

In Python only comments and string literals are touched (spans from `tokenize`): code
never holds PII, and a regex over code would rewrite things like `a@b.T` (a matrix
product) or dotted numbers. Other languages have no tokenizer here, so their whole text
is treated as comment. Placeholders are plain ASCII, so a string literal stays a string
literal and the file still parses.

Names are matched as one to five capitalised words (initials like `L.` and particles like
`van` allowed), which stops at punctuation: "Copyright 2001 Vinay Sajip. All Rights
Reserved." replaces only "Vinay Sajip". Organisations in copyright lines become <NAME> too.
"""
from __future__ import annotations

import bisect
import collections
import io
import ipaddress
import re
import tokenize

EMAIL, IP_ADDRESS, NAME = "<EMAIL>", "<IP_ADDRESS>", "<NAME>"

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_RESERVED_DOMAINS = ("example.com", "example.org", "example.net", "localhost")
_RESERVED_TLDS = (".example", ".test", ".invalid", ".localhost")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\w)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")

_UPPER = r"[^\W\d_a-zß-öø-ÿ]"  # an uppercase letter (no \p{Lu} in `re`): not a digit, _, or lowercase
_WORD = rf"{_UPPER}(?:\.|[\w'’-]+)?"
_PARTICLE = r"(?:van|von|de|der|den|da|di|du|la|le|del|della|bin|ibn)"
_NAME = rf"{_WORD}(?:[ \t]+(?:{_PARTICLE}[ \t]+)?{_WORD}){{0,4}}"
# Every name after the keyword on the rest of the line.
_AUTHOR_LINE = re.compile(r"(?i:\b(?:authors?|maintainers?)[ \t]*:)[^\n]*")
# Only the first name after the phrase: the sentence may go on with other capitalised words.
_BY_PHRASE = re.compile(rf"(?i:\b(?:written|contributed|created|maintained)[ \t]+by)[ \t]+({_NAME})")
_COPYRIGHT = re.compile(rf"(?i:\bcopyright\b)[ \t]*(?:\([cC]\)|©)?[ \t]*"
                        rf"(?:\d{{4}}(?:[ \t]*[-–,][ \t]*\d{{2,4}})*,?[ \t]+)+(?:by[ \t]+)?({_NAME})")
_DUNDER = re.compile(r"(?m)^__(?:author|maintainer|credits)__[ \t]*=[^\n]*")
_NAME_RE = re.compile(_NAME)


def _email_ok_to_keep(address: str) -> bool:
    domain = address.rsplit("@", 1)[1].lower()
    return domain in _RESERVED_DOMAINS or domain.endswith(_RESERVED_TLDS) or any(
        domain.endswith("." + d) for d in _RESERVED_DOMAINS)


def _is_public_ip(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return address.is_global and not address.is_multicast


def _line_says_version(text: str, pos: int) -> bool:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return "version" in text[start:end if end >= 0 else len(text)].lower()


def python_spans(text: str) -> list[tuple[int, int]] | None:
    """(start, end) offsets of the comments and string literals of Python source, or None
    if it does not tokenize."""
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    kinds = {tokenize.COMMENT, tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}
    spans = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type in kinds:
                (r0, c0), (r1, c1) = tok.start, tok.end
                spans.append((line_starts[r0 - 1] + c0, line_starts[r1 - 1] + c1))
    except (tokenize.TokenError, SyntaxError, IndexError):
        return None
    return spans


def _find(text: str) -> list[tuple[int, int, str, str]]:
    """(start, end, placeholder, kind) for every PII match in the whole text."""
    found = []
    for m in _EMAIL.finditer(text):
        if not _email_ok_to_keep(m.group()):
            found.append((m.start(), m.end(), EMAIL, "email"))
    for pattern in (_IPV4, _IPV6):
        for m in pattern.finditer(text):
            value = m.group()
            if (pattern is _IPV6 and not any(c.isdigit() for c in value)) or not _is_public_ip(value):
                continue
            if not _line_says_version(text, m.start()):
                found.append((m.start(), m.end(), IP_ADDRESS, "ip_address"))
    for line in _AUTHOR_LINE.finditer(text):
        for m in _NAME_RE.finditer(line.group()):
            if m.start() > 0:  # not the keyword itself ("Authors:" starts with a capital)
                found.append((line.start() + m.start(), line.start() + m.end(), NAME, "name"))
    for pattern in (_BY_PHRASE, _COPYRIGHT):
        for m in pattern.finditer(text):
            found.append((m.start(1), m.end(1), NAME, "name"))
    for line in _DUNDER.finditer(text):
        for m in _NAME_RE.finditer(line.group()):
            found.append((line.start() + m.start(), line.start() + m.end(), NAME, "name"))
    return found


def redact_pii(text: str, language: str) -> tuple[str, collections.Counter]:
    """The text with PII replaced, and a Counter of replacements by kind."""
    counts: collections.Counter = collections.Counter()
    found = _find(text)
    if not found:  # most files: no tokenizing needed
        return text, counts
    if language == "python":
        spans = python_spans(text)
        if spans is None:  # untokenizable Python: leave it (quality drops unparsable files)
            counts["untokenizable"] += 1
            return text, counts
        starts = [s for s, _ in spans]

        def inside(start: int, end: int) -> bool:
            i = bisect.bisect_right(starts, start) - 1
            return i >= 0 and spans[i][0] <= start and end <= spans[i][1]

        found = [f for f in found if inside(f[0], f[1])]
    out, pos = [], 0
    for start, end, placeholder, kind in sorted(found, key=lambda f: (f[0], -f[1])):
        if start < pos:  # overlaps a replacement already made
            continue
        out += [text[pos:start], placeholder]
        pos = end
        counts[kind] += 1
    out.append(text[pos:])
    return "".join(out), counts
