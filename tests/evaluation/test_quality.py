"""Static quality metrics: syntax, pyflakes findings, bandit findings, prompt lines not charged."""
from codejax.evaluation.quality import analyze

SNIPPETS = [
    "def f(:\n    return 1\n",  # syntax error
    "import os\n\ndef f():\n    return 1\n",  # unused import
    "def f():\n    return eval(input())\n",  # bandit B307
    "import subprocess\n\ndef f(cmd):\n    return subprocess.call(cmd, shell=True)  # nosec\n",  # B602, B404
    "def f(xs):\n    return sorted(xs)\n",  # clean
]


def test_per_sample_findings():
    report = analyze(SNIPPETS, workers=2)
    syntax, lint, evil_eval, shell, clean = report.samples
    assert not syntax["syntax_ok"] and "line 1" in syntax["syntax_error"] and "lint" not in syntax
    assert lint["lint_kinds"] == {"UnusedImport": 1} and lint["security"] == 0
    assert evil_eval["security_ids"] == {"B307": 1} and evil_eval["lint"] == 0
    assert shell["security_ids"].get("B602") == 1  # `# nosec` does not hide it
    assert "high" in shell["security_severity"]
    assert clean == {"syntax_ok": True, "lint": 0, "lint_kinds": {}, "security": 0, "security_ids": {},
                     "security_severity": {}}


def test_aggregates():
    summary = analyze(SNIPPETS, workers=2).summary
    assert summary["samples"] == 5 and summary["syntax_valid"] == 4 and summary["syntax_valid_rate"] == 0.8
    assert summary["lint_findings"] == 1 and summary["lint_by_kind"] == {"UnusedImport": 1}
    assert summary["samples_with_lint_rate"] == 0.25
    assert summary["samples_with_security_rate"] == 0.5 and summary["security_by_test"]["B307"] == 1
    assert "security_findings" not in analyze(SNIPPETS, security=False).summary


def test_findings_in_the_prompt_are_not_the_models():
    prompt = "import os\nimport sys\n\ndef f():\n"
    code = prompt + "    return sys.argv\n"
    sample = analyze([code], [len(prompt)], security=False).samples[0]
    assert sample["lint"] == 0  # `import os` is unused, but the prompt wrote it
    assert analyze([code], security=False).samples[0]["lint_kinds"] == {"UnusedImport": 1}
