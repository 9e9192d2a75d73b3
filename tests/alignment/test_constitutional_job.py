"""The contract's command: `configs/constitutional.py:tiny` from the CLI with no other flags, and its rerun."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(workdir, *flags):
    return subprocess.run([sys.executable, "-m", "codejax.main", "--config=configs/constitutional.py:tiny",
                           f"--workdir={workdir}", *flags], cwd=ROOT, capture_output=True, text=True, timeout=600)


def _rows(work, kind):
    return [json.loads(line) for p in sorted(work.glob(f"{kind}-*.jsonl")) for line in p.read_text().splitlines()]


@pytest.mark.slow
def test_tiny_constitutional_run_writes_the_contract_files_and_resumes(tmp_path):
    work = tmp_path / "cai"
    proc = _run(work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sft, prefs, traces = _rows(work, "sft"), _rows(work, "preference"), _rows(work, "traces")
    assert sft and prefs and traces and (work / "report.md").exists()
    assert all(r["messages"][-1]["role"] == "assistant" and r["messages"][-1]["content"] for r in sft)
    assert all({"prompt", "chosen", "rejected"} <= set(p) for p in prefs)
    assert all(isinstance(t["critiques"], list) and isinstance(t["revisions"], list) for t in traces)
    report = json.loads((work / "report.json").read_text())
    assert report["critic"] == "rules" and set(report["builders"]) == {
        "prompts", "redteam", "clarify", "explain", "multiturn", "diversify"}
    assert report["rates"]["final"]["refusal_rate_harmful"] == 1.0  # every harmful request ends refused
    # a rerun samples nothing and writes the same files
    again = _run(work)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((work / "report.json").read_text())["cache"]["misses"] == 0
    assert _rows(work, "sft") == sft and _rows(work, "preference") == prefs
    bad = _run(tmp_path / "bad", "--config.cai.builders=prompts,typo")
    assert bad.returncode != 0 and "cai.builders" in bad.stderr
