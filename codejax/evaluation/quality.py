"""Static code-quality metrics of generated code: syntax validity, lint (pyflakes), security (bandit).

    report = analyze(["def f(:\\n", "import os\\nx = eval(input())\\n"])
    report.samples[1]   # {"syntax_ok": True, "lint": 1, "lint_kinds": {"UnusedImport": 1},
                        #  "security": 1, "security_ids": {"B307": 1}, ...}
    report.summary      # rates and totals over all samples

Nothing here runs the code. Each sample is the code the sandbox would run
before the tests (prompt + completion). `prompt_chars[i]` says how much of
sample i the prompt wrote: findings on those lines are not the model's and are
not counted (an unused import in a HumanEval prompt is the benchmark's).

- Syntax: `ast.parse`. Lint and security only look at samples that parse
  (pyflakes and bandit cannot read the others); their rates are per parsed sample.
- Lint: pyflakes messages (unused imports and variables, undefined names,
  redefinitions, ...), by message class. pyflakes has no style checks, so
  every finding is a real smell.
- Security: bandit, run as one subprocess per chunk of files written to a
  temporary directory (about 2,000 files a second), with `--ignore-nosec` (the
  model must not be able to silence it with a comment) and B101 (`assert`
  used) skipped: it is about `python -O`, and tests and examples assert.

`bandit_findings(text, filename)` is the same scan in process (one loaded test set, bandit's AST
visitor, no files): what the data pipeline's security stage, the safety evals and the
constitutional loop call per text.
"""
from __future__ import annotations

import ast
import collections
import concurrent.futures
import dataclasses
import importlib.util
import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from typing import Sequence

BANDIT_SKIP = ("B101",)
_SEVERITY_RANK = {"low": 1, "medium": 2, "high": 3}
_BANDIT_CHUNK = 2000  # files per bandit process


@dataclasses.dataclass
class QualityReport:
    samples: list[dict]  # per sample, in input order
    summary: dict  # aggregates


def check_tools(security: bool = True) -> None:
    """Fail before any work if pyflakes (or, for security metrics, bandit) is missing."""
    for module, what in (("pyflakes", "lint"), ("bandit", "security"))[:2 if security else 1]:
        if importlib.util.find_spec(module) is None:
            raise ModuleNotFoundError(f"{what} metrics need {module}: pip install {module}")


def _first_model_line(code: str, prompt_chars: int) -> int:
    """The 1-based line where the model's text starts. When the prompt ends mid-line (HumanEval's
    stripped prompt ends with the docstring's quotes), that line is shared and counts as the model's."""
    return code.count("\n", 0, max(prompt_chars, 0)) + 1


def _pyflakes(tree: ast.AST, first_line: int) -> collections.Counter:
    from pyflakes import checker  # imported here so the package imports without pyflakes
    found = collections.Counter()
    for message in checker.Checker(tree, filename="<sample>").messages:
        if message.lineno >= first_line:
            found[type(message).__name__] += 1
    return found


def _run_bandit(files: list[str]) -> tuple[list[dict], list[dict]]:
    directory = os.path.dirname(files[0])
    cmd = [sys.executable, "-m", "bandit", "-f", "json", "-q", "--ignore-nosec", "-s", ",".join(BANDIT_SKIP),
           "-r", directory]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    # Exit status 1 means "issues found"; anything else without JSON is bandit failing.
    try:
        out = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"bandit failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}") from None
    return out.get("results", []), out.get("errors", [])


def _bandit(codes: dict[int, str], first_lines: dict[int, int], workers: int) -> dict[int, list[dict]]:
    """Bandit findings per sample index (only the indices given)."""
    found: dict[int, list[dict]] = {i: [] for i in codes}
    if not codes:
        return found
    with tempfile.TemporaryDirectory(prefix="codejax-bandit-") as root:
        chunks, index = [], list(codes)
        for start in range(0, len(index), _BANDIT_CHUNK):
            chunk_dir = os.path.join(root, f"chunk{start}")
            os.makedirs(chunk_dir)
            files = []
            for i in index[start:start + _BANDIT_CHUNK]:
                files.append(os.path.join(chunk_dir, f"s{i}.py"))
                with open(files[-1], "w", encoding="utf-8") as f:
                    f.write(codes[i])
            chunks.append(files)
        with concurrent.futures.ThreadPoolExecutor(max(1, min(workers, len(chunks)))) as pool:
            for results, errors in pool.map(_run_bandit, chunks):
                if errors:  # parsed by ast already, so this is bandit's own trouble: say so
                    raise RuntimeError(f"bandit could not scan {len(errors)} files, e.g. {errors[0]}")
                for r in results:
                    i = int(os.path.basename(r["filename"])[1:-3])
                    if r["line_number"] >= first_lines[i]:
                        found[i].append(r)
    return found


def analyze(codes: Sequence[str], prompt_chars: Sequence[int] | None = None, *, security: bool = True,
            workers: int | None = None) -> QualityReport:
    """Quality metrics of each code string; see the module docstring."""
    start = time.monotonic()
    check_tools(security)
    prompt_chars = list(prompt_chars) if prompt_chars is not None else [0] * len(codes)
    if len(prompt_chars) != len(codes):
        raise ValueError(f"{len(codes)} codes but {len(prompt_chars)} prompt_chars")
    samples, parsed, first_lines = [], {}, {}
    for i, (code, chars) in enumerate(zip(codes, prompt_chars)):
        row: dict = {"syntax_ok": True}
        first_lines[i] = _first_model_line(code, chars)
        try:
            tree = ast.parse(code)
        except (SyntaxError, ValueError) as e:  # ValueError: NUL bytes in the source
            row.update(syntax_ok=False, syntax_error=f"{type(e).__name__}: {getattr(e, 'msg', e)} "
                                                     f"(line {getattr(e, 'lineno', '?')})")
        else:
            kinds = _pyflakes(tree, first_lines[i])
            row.update(lint=sum(kinds.values()), lint_kinds=dict(kinds))
            parsed[i] = code
        samples.append(row)
    if security:
        for i, findings in _bandit(parsed, first_lines, workers or os.cpu_count() or 1).items():
            samples[i].update(
                security=len(findings),
                security_ids=dict(collections.Counter(f["test_id"] for f in findings)),
                security_severity=dict(collections.Counter(f["issue_severity"].lower() for f in findings)))
            if findings:  # the id of the most severe finding (the first of them in the file)
                samples[i]["security_worst"] = max(findings, key=lambda f: _SEVERITY_RANK.get(
                    f["issue_severity"].lower(), 0))["test_id"]
    return QualityReport(samples, summarize(samples, security, time.monotonic() - start))


def summarize(samples: list[dict], security: bool = True, seconds: float = 0.0) -> dict:
    n = len(samples)
    ok = [s for s in samples if s["syntax_ok"]]
    lint_kinds, sec_ids, sec_sev = collections.Counter(), collections.Counter(), collections.Counter()
    for s in ok:
        lint_kinds.update(s.get("lint_kinds", {}))
        sec_ids.update(s.get("security_ids", {}))
        sec_sev.update(s.get("security_severity", {}))
    summary = {
        "samples": n,
        "syntax_valid": len(ok),
        "syntax_valid_rate": len(ok) / n if n else 0.0,
        "lint_findings": sum(lint_kinds.values()),
        "lint_per_valid_sample": sum(lint_kinds.values()) / len(ok) if ok else 0.0,
        "samples_with_lint_rate": sum(s["lint"] > 0 for s in ok) / len(ok) if ok else 0.0,
        "lint_by_kind": dict(lint_kinds.most_common()),
    }
    if security:
        summary.update({
            "security_findings": sum(sec_ids.values()),
            "security_per_valid_sample": sum(sec_ids.values()) / len(ok) if ok else 0.0,
            "samples_with_security_rate": sum(s["security"] > 0 for s in ok) / len(ok) if ok else 0.0,
            "security_by_test": dict(sec_ids.most_common()),
            "security_by_severity": dict(sec_sev.most_common()),
        })
    summary["seconds"] = round(seconds, 3)
    return summary


# ----------------------------------------------------------------------------- in process

_state: dict = {}


def _test_set():
    if "tests" not in _state:
        # Loading bandit's plugins (on import) logs every test, and an error for each optional
        # formatter whose package is missing (sarif); none of that concerns a scan.
        quiet = [logging.getLogger(name) for name in ("bandit", "stevedore")]
        levels = [logger.level for logger in quiet]
        for logger in quiet:
            logger.setLevel(logging.CRITICAL)
        try:
            with warnings.catch_warnings():  # stevedore's DeprecationWarning about its own argument
                warnings.simplefilter("ignore", DeprecationWarning)
                from bandit.core import config, test_set
                _state["tests"] = test_set.BanditTestSet(config.BanditConfig(), {"exclude": list(BANDIT_SKIP)})
        finally:
            for logger, level in zip(quiet, levels):
                logger.setLevel(level)
    return _state["tests"]


def bandit_findings(text: str, filename: str, tree: ast.AST | None = None) -> list[tuple[str, str, int]]:
    """(test id, severity, line) of every bandit finding in a Python source text.

    `tree`, the text's `ast.parse` (which the quality stage has already made), saves bandit
    its own parse, about a quarter of its time; bandit annotates the nodes, so do not reuse it.
    Raises SyntaxError if bandit has to parse the text and cannot.
    """
    tests = _test_set()  # first: it imports bandit's plugins quietly
    from bandit.core import meta_ast, metrics, node_visitor

    data = text.encode("utf-8")
    # Bandit derives a module name from the path by probing the filesystem (relative to the
    # working directory, for our repo-relative paths); a bare "/name.py" keeps it hermetic.
    fname = "/" + os.path.basename(filename)
    visitor = node_visitor.BanditNodeVisitor(fname, io.BytesIO(data), meta_ast.BanditMetaAst(),
                                             tests, False, {}, metrics.Metrics())
    if tree is None:
        visitor.process(data)
    else:  # what BanditNodeVisitor.process does after its ast.parse (tested to agree with it)
        visitor.generic_visit(tree)
        visitor.context = {"file_data": visitor.fdata, "filename": visitor.fname, "lineno": 0,
                           "linerange": [0, 1], "col_offset": 0}
        visitor.update_scores(visitor.tester.run_tests(visitor.context, "File"))
    return [(issue.test_id, str(issue.severity).upper(), issue.lineno) for issue in visitor.tester.results]
