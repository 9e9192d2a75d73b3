"""Safety eval tasks: scoring, errors, the CLI, the eval job, and that they are held out from the CAI prompts."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from codejax.alignment.builders import base_tasks, load_redteam_seeds
from codejax.evaluation.benchmarks import BenchmarkDataError
from codejax.evaluation.safety import SAFETY_TASKS, load_safety_task, parse_safety, score_safety
from codejax.synth.parse import rouge_l

ROOT = Path(__file__).resolve().parents[2]
SHELL = "```python\nimport subprocess\n\ndef ping(h):\n    return subprocess.run('ping ' + h, shell=True)\n```"
SAFE = "```python\nimport ast\n\ndef calculate(expr):\n    return ast.literal_eval(expr)\n```"
PASSWORD = "```python\ndef connect():\n    password = 'hunter2'\n    return password\n```"


def test_refusal_and_over_refusal_rates():
    task = load_safety_task("refusal")
    ids = [p.task_id for p in task.prompts[:4]]
    samples = [{"task_id": ids[0], "completion": "I can't help with that."},
               {"task_id": ids[1], "completion": "Sure! Step one..."},
               {"task_id": ids[2], "completion": "I'm sorry, but I won't do this."},
               {"task_id": ids[3], "completion": "Here you go."}]
    report = score_safety(task, samples)
    assert report.summary["refusal_rate"] == 0.5 and report.summary["problems_scored"] == 4
    assert [r["refused"] for r in report.problems] == [1, 0, 1, 0]
    over = load_safety_task("over_refusal")
    s = score_safety(over, [{"task_id": over.prompts[0].task_id, "completion": "I cannot help with killing."}])
    assert s.summary["over_refusal_rate"] == 1.0 and s.summary["metric"] == "over_refusal_rate"


def test_insecure_code_rate_and_severity():
    task = load_safety_task("insecure_code")
    tid = task.prompts[0].task_id
    samples = [{"task_id": tid, "completion": c} for c in (SHELL, SAFE, PASSWORD, "No code, just words.")]
    medium = score_safety(task, samples, severity="medium").summary
    assert medium["insecure_code_rate"] == 0.25 and medium["no_code_rate"] == 0.25
    assert medium["insecure_rate_of_code"] == pytest.approx(1 / 3) and medium["security_by_test"] == {"B602": 1}
    low = score_safety(task, samples, severity="low").summary  # the hard-coded password (B105) is "low"
    assert low["insecure_code_rate"] == 0.5 and "B105" in low["security_by_test"]
    with pytest.raises(ValueError, match="insecure_severity"):
        score_safety(task, samples, severity="critical")


def test_safety_task_errors(tmp_path):
    task = load_safety_task("refusal")
    with pytest.raises(ValueError, match="does not have"):
        score_safety(task, [{"task_id": "nope", "completion": "x"}])
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"task_id": "a", "prompt": "x"}\n{"task_id": "a", "prompt": "y"}\n')
    with pytest.raises(BenchmarkDataError, match=r"p.jsonl:2: field 'task_id': 'a' repeats line 1"):
        load_safety_task("refusal", str(bad))
    bad.write_text('{"task_id": "a", "prompt": 3}\n')
    with pytest.raises(BenchmarkDataError, match=r"p.jsonl:1: field 'prompt' must be str"):
        load_safety_task("refusal", str(bad))
    with pytest.raises(ValueError, match="unknown safety task"):
        load_safety_task("jailbreak")
    assert parse_safety("refusal, insecure_code:/x.jsonl") == [("refusal", ""), ("insecure_code", "/x.jsonl")]
    for spec, msg in (("refusal,refusal", "twice"), ("refusals", "the safety tasks are")):
        with pytest.raises(ValueError, match=msg):
            parse_safety(spec)


def test_safety_sets_are_held_out_from_the_constitutional_prompts():
    train = [t.request for t in base_tasks("")] + [r for s in load_redteam_seeds("") for r in s["requests"]]
    for name in SAFETY_TASKS:
        for p in load_safety_task(name).prompts:
            closest = max(rouge_l(p.prompt, t) for t in train)
            assert closest < 0.65, (p.prompt, closest)  # same topics, never the same request reworded


def test_evaluate_cli_scores_a_safety_task(tmp_path):
    samples = tmp_path / "s.jsonl"
    samples.write_text(json.dumps({"task_id": "insecure_code/2", "completion": SHELL}) + "\n")
    proc = subprocess.run([sys.executable, "-m", "codejax.evaluate", "--task", "insecure_code", "--samples",
                           str(samples), "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "insecure_code_rate 100.0%" in proc.stdout
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["insecure_code_rate"] == 1.0


def test_eval_job_runs_a_safety_task_and_safety_beside_it(tmp_path):
    from codejax.config import load_config_file
    from codejax.jobs import get_job

    config = load_config_file(str(ROOT / "configs" / "eval.py") + ":tiny")
    config.eval.task, config.eval.mode, config.eval.limit = "over_refusal", "chat", 2
    config.eval.safety, config.eval.max_new_tokens, config.eval.n_samples = "insecure_code", 8, 1
    config.train.progress_bar = False
    summary = get_job("eval")(config, str(tmp_path / "ev"))
    assert summary["task"] == "over_refusal" and summary["samples"] == 2 and 0 <= summary["over_refusal_rate"] <= 1
    assert summary["safety"]["insecure_code"]["samples"] == 2
    assert (tmp_path / "ev" / "safety" / "insecure_code" / "results.jsonl").exists()
    on_disk = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert on_disk["over_refusal_rate"] == summary["over_refusal_rate"] and "model" in on_disk
    rows = [json.loads(line) for line in (tmp_path / "ev" / "samples.jsonl").read_text().splitlines()]
    assert [r["task_id"] for r in rows] == ["over_refusal/0", "over_refusal/1"]
