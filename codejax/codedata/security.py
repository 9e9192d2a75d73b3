"""Security filtering with bandit, in-process: findings per file, and the severity cut.

`codejax.evaluation.quality` runs bandit as a subprocess over a temporary directory of
files, which suits a batch of model samples, and also holds the in-process scanner used here
(`bandit_findings`): each worker process keeps one loaded bandit test set and runs bandit's AST
visitor on the tree the quality stage parsed (about 1.5 ms per KB), so no file is written and one
bad file cannot take a batch down with it. The same tests are skipped (`BANDIT_SKIP`: B101,
`assert` used, which is about `python -O`, not security) and `# nosec` comments are ignored: code
that silences a finding is still code with that finding, and we are choosing what a model learns from.
"""
from __future__ import annotations

from codejax.evaluation.quality import bandit_findings  # the scanner, shared with the safety evals

__all__ = ["SEVERITIES", "bandit_findings", "blocking_finding", "check_severity"]
SEVERITIES = ("LOW", "MEDIUM", "HIGH")


def check_severity(name: str) -> str:
    """Validate a severity threshold: LOW | MEDIUM | HIGH, or '' / 'none' (no filter)."""
    value = name.strip().upper()
    if value in ("", "NONE"):
        return ""
    if value not in SEVERITIES:
        raise ValueError(f"data_pipeline.security_severity={name!r}; expected one of {SEVERITIES} or 'none'")
    return value


def blocking_finding(findings, threshold: str) -> str | None:
    """The test id of the first finding at or above `threshold`, or None."""
    if not threshold:
        return None
    floor = SEVERITIES.index(threshold)
    for test_id, severity, _ in findings:
        if severity in SEVERITIES and SEVERITIES.index(severity) >= floor:
            return test_id
    return None
