"""The contract's command: `configs/synth.py:tiny` from the CLI with no other flags, and its rerun from the cache."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from codejax.synth import read_review

ROOT = Path(__file__).resolve().parents[2]


def _run(workdir, *flags):
    return subprocess.run([sys.executable, "-m", "codejax.main", "--config=configs/synth.py:tiny",
                           f"--workdir={workdir}", *flags], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_tiny_synth_runs_and_resumes_from_its_cache(tmp_path):
    work = tmp_path / "synth"
    proc = _run(work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((work / "report.json").read_text())
    shards = sorted(work.glob("train-*.jsonl"))
    rows = [json.loads(line) for p in shards for line in p.read_text().splitlines()]
    assert shards and (work / "report.md").exists() and (work / "plots" / "funnel.png").exists()
    assert report["methods"] == ["self_instruct", "evol_instruct", "oss_instruct", "backtranslation", "diversify"]
    assert report["kept"] == len(rows) > 0 and all({"instruction", "input", "output"} <= set(r) for r in rows)
    assert all(g["requests"] > 0 for g in report["generation"].values())
    assert report["cache"]["hits"] == 0 and report["cache"]["misses"] > 0
    # a rerun (a killed run's restart) asks the model nothing and writes the same rows
    again = _run(work)
    assert again.returncode == 0, again.stderr[-3000:]
    report2 = json.loads((work / "report.json").read_text())
    assert report2["cache"] == {"hits": report["cache"]["misses"], "misses": 0}
    assert [json.loads(line) for p in sorted(work.glob("train-*.jsonl")) for line in p.read_text().splitlines()] == rows
    # a changed setting in the same workdir is refused unless allowed (it would replace the outputs)
    changed = _run(work, "--config.synth.temperature=0.3")
    assert changed.returncode == 2 and "synth.temperature" in changed.stderr
    # the review workflow: a reviewer rejects a row in review.csv, the run is repeated with it
    with open(work / "review.csv", newline="") as f:
        review = list(csv.DictReader(f))
    assert list(review[0])[:3] == ["id", "method", "verdict"] and len(review) == len(rows)
    first_id = review[0]["id"]
    review[0]["verdict"] = "reject"
    reviewed = tmp_path / "reviewed.csv"
    with open(reviewed, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(review[0]))
        writer.writeheader()
        writer.writerows(review)
    assert read_review(str(reviewed))[first_id]["verdict"] == "reject"
    again = _run(work, f"--config.synth.review_path={reviewed}")
    assert again.returncode == 0, again.stderr[-3000:]
    kept = [json.loads(line) for p in sorted(work.glob("train-*.jsonl")) for line in p.read_text().splitlines()]
    assert len(kept) == len(rows) - 1 and first_id not in {r["id"] for r in kept}
