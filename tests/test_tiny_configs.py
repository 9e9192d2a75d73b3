"""Every `:tiny` training variant runs from the CLI with no flag but --config and --workdir: the
built-in tokenizer and rows (codejax/data/builtin.py, codejax/builtin) stand in for the user's."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["sft", "sft_peft", "dpo", "reward", "grpo_code", "sft_tools", "grpo_tools"]


@pytest.mark.slow
@pytest.mark.parametrize("name", TINY)
def test_tiny_variant_runs_with_no_other_flags(name, tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "codejax.main", f"--config=configs/{name}.py:tiny",
                           f"--workdir={workdir}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["stop_reason"] == "completed" and summary["steps"] == summary["train_steps"] > 0
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["tokenizer"]["path"] == "builtin"  # resolved at load time, so the workdir stays portable
    assert (workdir / "metrics.jsonl").read_text().strip()
    if name == "grpo_tools":  # the contract's episode metrics, beside the usual rewards
        logged = set().union(*(json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()))
        assert {"train/reward", "eval/reward", "train/tool_calls", "train/turns"} <= logged
