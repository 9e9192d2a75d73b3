"""The main job's tiny variant runs every stage end to end and reports held-out improvement."""
import json
from pathlib import Path

import jax
import pytest
import transformers

from codejax.config import load_config_file
from codejax.jobs import get_job
from codejax.jobs.quickstart import chunk_source
from codejax.models import load_hf

ROOT = Path(__file__).resolve().parents[2]


def test_chunk_source_keeps_blocks_and_text():
    text = "\n\n".join(f"def f{i}():\n    return {i}" for i in range(50))
    chunks = chunk_source(text, max_chars=200)
    assert len(chunks) > 5 and all(len(c) <= 200 for c in chunks)
    assert "".join(chunks) == text + "\n\n"  # nothing lost, nothing reordered


@pytest.mark.slow
def test_quickstart_tiny_end_to_end(tmp_path):
    config = load_config_file(f"{ROOT / 'configs' / 'quickstart.py'}:tiny")
    config.train.progress_bar = False
    figures = get_job("quickstart")(config, str(tmp_path))

    report = (tmp_path / "report.md").read_text()
    assert "| pretrain |" in report and "| sft |" in report
    for stage in ("pretrain", "sft"):
        assert (tmp_path / stage / "plots" / "loss.png").exists()
        evals = [json.loads(line) for line in (tmp_path / stage / "metrics.jsonl").read_text().splitlines()]
        curve = [(r["step"], r["eval/loss"]) for r in evals if "eval/loss" in r]
        assert curve[0][0] == 0 and curve[-1][0] == config.quickstart[f"{stage}_steps"]
        assert curve[-1][1] < curve[0][1], f"{stage}: held-out loss did not improve: {curve}"
    assert figures["sft_data"]["pairs"] > 100
    # Both stages hold out the same files: SFT eval functions come from files never pretrained on.
    def paths(stage, split):
        lines = (tmp_path / stage / f"{split}.jsonl").read_text().splitlines()
        return {json.loads(line)["path"] for line in lines}
    assert paths("sft_data", "eval") and paths("sft_data", "eval") <= paths("corpus", "eval")
    assert not paths("sft_data", "eval") & paths("corpus", "train")
    assert figures["sft"]["data"]["examples"] > 100

    # The fine-tuned model is an ordinary HF directory, loadable by both frameworks.
    exported = tmp_path / "sft" / "hf_model"
    model, params = load_hf(exported)
    assert model.cfg.vocab_size == figures["tokenizer"]["vocab_size"]
    assert transformers.AutoTokenizer.from_pretrained(exported).eos_token == "<|endoftext|>"

    # The alignment stages: the task's rows joined SFT; DPO starts from the SFT export, GRPO from
    # DPO's; every stage's model is scored on held-out problems no stage trained on.
    q = config.quickstart
    assert figures["sft_data"]["task_rows"] == q.task_sft_rows
    assert json.loads((tmp_path / "dpo" / "config.json").read_text())["model"]["hf_path"] == str(exported)
    assert json.loads((tmp_path / "grpo" / "config.json").read_text())["model"]["hf_path"] == \
        str(tmp_path / "dpo" / "hf_model")
    assert figures["dpo"]["steps"] == q.dpo_steps and figures["grpo"]["steps"] == q.grpo_steps
    grpo_rows = [json.loads(line) for line in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/reward" in r for r in grpo_rows) and any("train/reward" in r for r in grpo_rows)
    def docs(name):
        return {json.loads(line)["prompt"].split('"""')[1]
                for line in (tmp_path / "task" / f"{name}.jsonl").read_text().splitlines()}
    assert docs("problems") == docs("prompts_eval")
    assert not docs("problems") & (docs("prompts_train") | docs("pairs_train"))
    assert set(figures["eval"]) == {"pretrain", "sft", "dpo", "grpo"}
    for stage, result in figures["eval"].items():
        summary = json.loads((tmp_path / "eval" / stage / "summary.json").read_text())
        assert summary["problems_scored"] == figures["task"]["problems"]
        assert summary["samples"] == figures["task"]["problems"] * q.eval_samples
        assert result["pass_at_k"] == summary["pass_at_k"] and set(result["pass_at_k"]) == {"pass@1", "pass@2"}
        assert f"| {stage} | " in report
    assert "## Alignment on the arithmetic-function task" in report and "### Sample completions" in report
    assert "![GRPO reward](grpo/plots/reward.png)" in report and (tmp_path / "grpo" / "plots" / "reward.png").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["report"] == str(tmp_path / "report.md")

    # A rerun skips every finished stage: nothing is trained or scored again.
    before = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*/summary.json")}
    before.update({p: p.stat().st_mtime_ns for p in tmp_path.glob("eval/*/summary.json")})
    again = get_job("quickstart")(config, str(tmp_path))
    assert again["eval"] == figures["eval"]
    assert {p: p.stat().st_mtime_ns for p in before} == before


@pytest.mark.slow
def test_quickstart_fine_tunes_a_local_hf_model_instead_of_pretraining(tmp_path):
    from codejax.models import init_params, save_hf, tiny_config
    from codejax.tokenizer import train_code_tokenizer
    tokenizer = train_code_tokenizer([f"def f{i}(x):\n    return x + {i}\n" for i in range(200)], vocab_size=300)
    cfg = tiny_config("qwen2", vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id)
    save_hf(tmp_path / "base", cfg, init_params(cfg, jax.random.PRNGKey(0)), tokenizer=tokenizer)

    config = load_config_file(f"{ROOT / 'configs' / 'quickstart.py'}:tiny")
    config.train.progress_bar = False
    config.model.hf_path = str(tmp_path / "base")
    config.quickstart.align = False  # stop after SFT (the alignment stages are the test above's)
    figures = get_job("quickstart")(config, str(tmp_path / "run"))
    assert "pretrain" not in figures and not (tmp_path / "run" / "pretrain").exists()
    assert "dpo" not in figures and not (tmp_path / "run" / "task").exists() and figures["sft_data"]["task_rows"] == 0
    assert figures["sft"]["model"]["family"] == "qwen2" and figures["sft"]["steps"] == config.quickstart.sft_steps
