"""Scoring samples: grouping, pass@k, missing and unknown tasks, the files written, the CLI."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from codejax.evaluation import BenchmarkDataError, format_table, read_samples, score, write_report
from codejax.sandbox import Limits

ROOT = Path(__file__).resolve().parents[2]


def _samples(humaneval, count=3):
    """Per problem: the canonical solution, a wrong one and an infinite loop (counted as a timeout)."""
    rows = []
    for p in humaneval.problems[:count]:
        rows += [{"task_id": p.task_id, "completion": p.reference},
                 {"task_id": p.task_id, "completion": "    return None\n"},
                 {"task_id": p.task_id, "completion": "    while True:\n        pass\n"}]
    return rows


def test_score_groups_samples_and_computes_pass_at_k(humaneval, tmp_path):
    samples = _samples(humaneval)
    samples.append({"task_id": "HumanEval/0", "completion": "\n" + humaneval.problems[0].reference})  # 4 for task 0
    report = score(humaneval, samples, ks=(1, 3, 10), limits=Limits(timeout_s=1.5), workers=2, quality=True)
    s = report.summary
    assert s["problems"] == 164 and s["problems_scored"] == 3 and s["problems_missing"] == 161
    assert s["missing_task_ids"][0] == "HumanEval/3" and len(s["missing_task_ids"]) == 20
    assert s["samples"] == 10 and s["samples_per_problem"] == {"min": 3, "max": 4}
    assert s["status_counts"] == {"passed": 4, "failed": 3, "timeout": 3}
    assert s["pass_at_k"]["pass@1"] == pytest.approx((2 / 4 + 1 / 3 + 1 / 3) / 3)
    assert s["pass_at_k"]["pass@3"] == pytest.approx(1.0)  # every problem has a correct sample among 3 (4)
    assert "pass@10" in s["pass_at_k_skipped"]
    assert s["quality"]["syntax_valid_rate"] == 1.0 and s["config"]["timeout_s"] == 1.5
    first = report.problems[0]
    assert (first["task_id"], first["n"], first["c"]) == ("HumanEval/0", 4, 2)
    assert [x["status"] for x in first["samples"]] == ["passed", "failed", "timeout", "passed"]
    assert first["samples"][1]["reason"] == "AssertionError" and "quality" in first["samples"][0]
    paths = write_report(report, str(tmp_path / "out"))
    rows = [json.loads(line) for line in Path(paths["results"]).read_text().splitlines()]
    assert [r["task_id"] for r in rows] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert json.loads(Path(paths["summary"]).read_text())["pass_at_k"] == s["pass_at_k"]
    assert "pass@1" in format_table(s) and "skipped" in format_table(s)


def test_unknown_task_ids_are_an_error(humaneval):
    samples = [{"task_id": "HumanEval/0", "completion": ""}, {"task_id": "MBPP/1", "completion": ""},
               {"task_id": 7, "completion": ""}]
    with pytest.raises(ValueError, match=r"2 samples name 2 task_ids .* 'MBPP/1', '7'.*another task"):
        score(humaneval, samples)
    with pytest.raises(BenchmarkDataError, match=r"samples\[0\]: field 'completion' must be str"):
        score(humaneval, [{"task_id": "HumanEval/0", "completion": None}])


def test_read_samples_checks_rows(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"task_id": "HumanEval/0", "completion": "x"}\n\n{"task_id": "HumanEval/1"}\n')
    with pytest.raises(BenchmarkDataError, match=r"s.jsonl:3: field 'completion' must be str"):
        read_samples(path)
    path.write_text('{"completion": "x"}\n')
    with pytest.raises(BenchmarkDataError, match=r"s.jsonl:1: field 'task_id'"):
        read_samples(path)
    with pytest.raises(FileNotFoundError):
        read_samples(tmp_path / "none.jsonl")


def test_cli_end_to_end(humaneval, tmp_path):
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in _samples(humaneval, 2)))
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "codejax.evaluate", "--task", "humaneval", "--samples", str(samples), "--k", "1,2",
         "--out", str(out), "--workers", "2", "--timeout", "1.5", "--quality", "--no-progress"],
        capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "pass@1" in result.stdout and "33.33%" in result.stdout and "quality" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pass_at_k"]["pass@2"] == pytest.approx(2 / 3)
    assert summary["config"]["samples_file"] == str(samples)
    assert len((out / "results.jsonl").read_text().splitlines()) == 2
    bad = subprocess.run([sys.executable, "-m", "codejax.evaluate", "--task", "mbpp", "--samples", str(samples)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and "needs a problems file" in bad.stderr
