"""pass@k as a training-time metric: sft logs it at every evaluation and can select checkpoints by it."""
import json
from pathlib import Path

import pytest

from codejax.config import load_config_file
from codejax.jobs import get_job
from codejax.train.metrics import read_metrics

pytestmark = pytest.mark.slow  # end-to-end job runs

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "sft.py")


def test_sft_logs_pass_at_k_and_uses_it_as_best_metric(tmp_path, chat_tokenizer_dir, humaneval):
    rows = [{"instruction": f"Write {p.entry_point}.", "input": "", "output": p.reference[:200]}
            for p in humaneval.problems[:40]]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = load_config_file(f"{CONFIG}:tiny")
    config.data.train_paths, config.tokenizer.path = str(data), chat_tokenizer_dir
    config.train.steps, config.train.eval_every, config.train.checkpoint_every = 4, 2, 2
    config.train.progress_bar, config.train.async_checkpoint = False, False
    config.train.best_metric, config.train.best_mode = "eval/pass@1", "max"
    config.eval.during_training, config.eval.limit, config.eval.max_new_tokens = True, 2, 8
    summary = get_job("sft")(config, str(tmp_path / "run"))
    evals = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "eval/pass@1" in r]
    assert [r["step"] for r in evals] == [2, 4]  # every evaluation, the final one included
    assert all(0.0 <= r["eval/pass@1"] <= 1.0 and r["eval/sampler_tokens_per_s"] > 0 for r in evals)
    assert "eval/loss" in evals[0]  # alongside the loss
    assert summary["best_eval"] == max(r["eval/pass@1"] for r in evals)
    assert summary["best_checkpoint_step"] in (2, 4)
