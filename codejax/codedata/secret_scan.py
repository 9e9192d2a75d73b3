"""Secret detection and removal with detect-secrets: each secret's value becomes <SECRET>.

detect-secrets' own line loop costs about 5 s per MB of code with its 27 plugins (mostly its
plugin and filter dispatch per line, not the regexes). Almost no line can hold a
secret, so a line is handed to detect-secrets only if one of the active plugins could
report something on it, judged by the plugins' own patterns applied to the whole text:

* regex plugins (AWS, GitHub, private keys, JWT, Slack, ... `RegexBasedDetector`): their
  `denylist` patterns, recompiled with re.MULTILINE so `^`/`$` mean what they mean per line;
* KeywordDetector: its keyword list (`password`, `api_key`, `secret`, ...);
* high-entropy strings: a quoted string of the plugin's charset long enough to exceed the
  entropy limit (a string of n characters has at most log2(n) bits per character, so
  base64 at 4.5 needs at least 23 characters and hex at 3.0 at least 9);
* any other plugin: every line.

Every line some plugin could report on is a candidate by construction (a match that spans
lines marks all of them), and the candidates go through detect-secrets' real scan (plugins
and its default filters), so the findings are detect-secrets' own;
experiments/bench_datapipe.py compares them with a full scan of a sixth of the stdlib
(same secrets, 7x faster). Each line is scanned on its own, so the
`pragma: allowlist nextline` comment (the previous line) is not honoured; a same-line
`pragma: allowlist secret` is.
"""
from __future__ import annotations

import bisect
import collections
import math
import re

SECRET = "<SECRET>"

_state: dict = {}


def configure(plugins: str = "") -> None:
    """Make this process scan with `plugins` (comma-separated class names; '' = all of them)."""
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.settings import cache_bust, configure_settings_from_baseline

    known = sorted(c.__name__ for c in get_mapping_from_secret_type_to_class().values())
    names = [p.strip() for p in plugins.split(",") if p.strip()] or known
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"data_pipeline.secret_plugins: unknown detect-secrets plugins {unknown}; "
                         f"known: {known}")
    if _state.get("names") == names:
        return
    cache_bust()  # a fresh settings object: detect-secrets' default filters, no plugins
    configure_settings_from_baseline({"plugins_used": [{"name": n} for n in names]})
    _state.update(names=names, prefilter=_prefilter())


def _prefilter() -> list | None:
    """Patterns that together match every line some active plugin could report on; None if a
    plugin cannot be pre-filtered (every line is then scanned)."""
    from detect_secrets.core.scan import get_plugins
    from detect_secrets.plugins.base import RegexBasedDetector
    from detect_secrets.plugins.high_entropy_strings import HighEntropyStringsPlugin
    from detect_secrets.plugins.keyword import DENYLIST, KeywordDetector

    patterns = []
    for plugin in get_plugins():
        if isinstance(plugin, RegexBasedDetector):
            patterns += [re.compile(p.pattern, p.flags | re.MULTILINE) for p in plugin.denylist]
        elif isinstance(plugin, KeywordDetector):
            patterns.append(_LowercaseSearch("|".join(DENYLIST)))
        elif isinstance(plugin, HighEntropyStringsPlugin):
            shortest = math.floor(2 ** plugin.entropy_limit) + 1
            patterns.append(re.compile(r"(['\"])[%s]{%d,}\1" % (re.escape(plugin.charset), shortest)))
        else:
            return None
    return patterns


class _LowercaseSearch:
    """A case-insensitive search run on the lowercased text: 3x faster than re.IGNORECASE."""

    def __init__(self, pattern: str):
        self.pattern = re.compile(pattern)
        self.slow = re.compile(pattern, re.IGNORECASE)

    def finditer(self, text: str):
        lowered = text.lower()
        # A few characters change length when lowercased (İ); offsets would shift then.
        return self.pattern.finditer(lowered) if len(lowered) == len(text) else self.slow.finditer(text)


def _candidate_lines(text: str, lines: list[str]) -> list[int]:
    prefilter = _state["prefilter"]
    if prefilter is None:
        return list(range(len(lines)))
    starts = [0]
    for line in lines[:-1]:
        starts.append(starts[-1] + len(line) + 1)
    found = set()
    for pattern in prefilter:
        for m in pattern.finditer(text):
            first = bisect.bisect_right(starts, m.start()) - 1
            last = bisect.bisect_right(starts, max(m.end() - 1, m.start())) - 1
            found.update(range(first, last + 1))
    return sorted(found)


def redact_secrets(text: str, filename: str = "file") -> tuple[str, collections.Counter]:
    """The text with every detected secret value replaced by <SECRET>, and a Counter of the
    secrets found by detect-secrets type. Call `configure` first (once per process)."""
    from detect_secrets.core.scan import _process_line_based_plugins  # the scan of a list of lines

    if "names" not in _state:
        configure()
    lines = text.split("\n")
    counts: collections.Counter = collections.Counter()
    changed = False
    for i in _candidate_lines(text, lines):
        # Numbered 1 on its own: detect-secrets builds its context snippet from the list given.
        secrets = list(_process_line_based_plugins([(1, lines[i])], filename))
        for secret in sorted(secrets, key=lambda s: -len(s.secret_value or "")):
            if secret.secret_value and secret.secret_value in lines[i]:
                lines[i] = lines[i].replace(secret.secret_value, SECRET)
                counts[secret.type] += 1
                changed = True
    return ("\n".join(lines) if changed else text), counts
