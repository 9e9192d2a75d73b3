"""The built-in arithmetic task: a fixed train / held-out partition of its problems, and its HumanEval export."""
import hashlib
import json

import pytest

from codejax.evaluation import load_benchmark, score
from codejax.rl.environments import arith_humaneval, arith_pairs, arith_prompts, arith_sft_rows


def _combo(prompt: str) -> str:
    return prompt.split('"""')[1]  # "Return x plus 3."


def test_split_none_rows_are_unchanged_by_the_split_option():
    """split=None draws exactly what the generators drew before the option existed (cached data, seeds)."""
    digest = hashlib.sha256(json.dumps(arith_prompts(64, seed=4)).encode()).hexdigest()
    assert arith_prompts(64, seed=4) == arith_prompts(64, seed=4, split=None)
    assert digest == hashlib.sha256(json.dumps(arith_prompts(64, seed=4, split=None)).encode()).hexdigest()
    assert len({_combo(r["prompt"]) for r in arith_prompts(2000, seed=0)}) == 108  # every combination


def test_train_and_held_out_combinations_never_meet():
    train = {_combo(r["prompt"]) for r in arith_prompts(3000, seed=1, split="train")}
    train |= {_combo(r["prompt"]) for r in arith_pairs(500, seed=2, split="train")}
    train |= {_combo(r["prompt"]) for r in arith_sft_rows(500, seed=3, split="train")}
    held = {_combo(r["prompt"]) for r in arith_prompts(3000, seed=1, split="held_out")}
    problems = arith_humaneval("held_out")
    assert {_combo(p["prompt"]) for p in problems} == held
    assert not train & held
    assert len(held) + len(train) == 108 and 10 <= len(held) <= 35
    assert {p["task_id"].split("/")[1].split("_")[0] for p in problems} == {"plus", "minus", "times"}
    with pytest.raises(ValueError, match="split="):
        arith_prompts(1, split="test")


def test_humaneval_export_loads_and_its_references_pass_in_the_sandbox(tmp_path):
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in arith_humaneval("held_out")))
    benchmark = load_benchmark("humaneval", path)
    right = [{"task_id": p.task_id, "completion": p.reference} for p in benchmark.problems]
    wrong = [{"task_id": p.task_id, "completion": " * 0 + 1000"} for p in benchmark.problems]
    assert score(benchmark, right).summary["pass_at_k"]["pass@1"] == 1.0
    assert score(benchmark, wrong).summary["pass_at_k"]["pass@1"] == 0.0
