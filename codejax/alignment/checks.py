"""Code-aware checks inside the critique loop: bandit on a reply's code, and its tests in the sandbox.

    findings = check_replies(["```python\\ndef f(x):\\n    return eval(x)\\n```"], tests=[""])
    findings[0].security            # [("B307", "medium", 2)]: at or above cai.security_severity
    findings[0].text()              # the lines the critique prompt gets

A reply's code is its ```python block (or the whole reply when that parses). The tests are the
task's own (a prompt row's `tests`: asserts written by whoever wrote the prompt file), run after the
code in the sandbox (codejax.sandbox: a separate, confined process per program; the verdict comes
from the judge process, so code that prints "passed" or exits early does not pass).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from codejax.evaluation.safety import SEVERITIES, answer_code, at_or_above, bandit_findings
from codejax.sandbox import Limits, Program, run_programs


@dataclasses.dataclass(frozen=True)
class Findings:
    has_code: bool
    findings: tuple[tuple[str, str, int], ...] = ()  # every bandit (test id, severity, line)
    tests_run: bool = False
    tests_passed: bool = False
    test_detail: str = ""
    severity: str = "medium"  # the threshold: findings at or above it are `security`

    @property
    def security(self) -> tuple[tuple[str, str, int], ...]:
        """The findings at or above the threshold (cai.security_severity)."""
        return tuple(at_or_above(self.findings, self.severity))

    @property
    def security_ids(self) -> frozenset[str]:
        return frozenset(f[0] for f in self.security)

    def text(self) -> str:
        """What the automated checks found, for the critic."""
        if not self.has_code:
            return "Automated checks: the reply has no Python code."
        parts = [("bandit: " + "; ".join(f"{i} ({sev}) on line {line}" for i, sev, line in self.findings))
                 if self.findings else "bandit: no findings"]
        if self.tests_run:
            parts.append("tests: pass" if self.tests_passed else f"tests: FAIL ({self.test_detail})")
        return "Automated checks: " + ", ".join(parts) + "."


def check_replies(replies: Sequence[str], tests: Sequence[str], *, severity: str = "medium",
                  timeout_s: float = 5.0, workers: int | None = None) -> list[Findings]:
    """Findings of each reply; tests[i] ('' = none) run against reply i's code, all in one sandbox batch."""
    if severity not in SEVERITIES:
        raise ValueError(f"cai.security_severity={severity!r}; expected one of {SEVERITIES}")
    codes = [answer_code(r) for r in replies]
    programs, index = [], {}
    for i, (code, t) in enumerate(zip(codes, tests)):
        if code is not None and t.strip():
            index[i] = len(programs)
            programs.append(Program(code=code, tests=t, name=f"reply{i}"))
    results = run_programs(programs, Limits(timeout_s=timeout_s), workers=workers, progress=False) if programs else []
    out = []
    for i, code in enumerate(codes):
        if code is None:
            out.append(Findings(False))
            continue
        found = tuple(bandit_findings(code))
        if i in index:
            res = results[index[i]]
            out.append(Findings(True, found, True, res.passed, "" if res.passed else f"{res.status.value}: "
                                f"{res.reason}"[:200], severity))
        else:
            out.append(Findings(True, found, severity=severity))
    return out


def regression(before: Findings, after: Findings) -> str:
    """Why a revision must be rejected ('' = it may stand): it adds a bandit finding at or above the
    threshold, or breaks tests that passed."""
    new = sorted(after.security_ids - before.security_ids)
    if new:
        return "new_security_finding:" + ",".join(new)
    if before.tests_passed and not after.tests_passed:
        return "breaks_tests"
    return ""
