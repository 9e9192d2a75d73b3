"""Security filtering with bandit, in-process: findings per file, and the severity cut.

`codejax.evaluation.quality` runs bandit as a subprocess over a temporary directory of
files, which suits a batch of model samples; here each worker process keeps one loaded
bandit test set and runs bandit's AST visitor on the tree the quality stage parsed (about
1.5 ms per KB), so no file is written and one bad file cannot take a batch down with it. The
same tests are skipped (`BANDIT_SKIP`: B101, `assert` used, which is about `python -O`,
not security) and `# nosec` comments are ignored: code that silences a finding is still
code with that finding, and we are choosing what a model learns from.
"""
from __future__ import annotations

import ast
import io
import logging
import os
import warnings

from codejax.evaluation.quality import BANDIT_SKIP

SEVERITIES = ("LOW", "MEDIUM", "HIGH")

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


def check_severity(name: str) -> str:
    """Validate a severity threshold: LOW | MEDIUM | HIGH, or '' / 'none' (no filter)."""
    value = name.strip().upper()
    if value in ("", "NONE"):
        return ""
    if value not in SEVERITIES:
        raise ValueError(f"data_pipeline.security_severity={name!r}; expected one of {SEVERITIES} or 'none'")
    return value


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


def blocking_finding(findings, threshold: str) -> str | None:
    """The test id of the first finding at or above `threshold`, or None."""
    if not threshold:
        return None
    floor = SEVERITIES.index(threshold)
    for test_id, severity, _ in findings:
        if severity in SEVERITIES and SEVERITIES.index(severity) >= floor:
            return test_id
    return None
