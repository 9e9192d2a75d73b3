"""The pipeline with the task builders: rows codejax.data reads, preference shards, mixing, decontamination."""
import collections
import json
import random

import pytest
from codedata_helpers import make_config, module_text, read_rows, run

from codejax.codedata import decontam, stages
from codejax.codedata.settings import settings_from_config

TASKS = "function_impl,docstring,completion,preference"


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks") / "proj"
    for i, name in enumerate(("alpha", "beta", "gamma", "delta", "eps", "zeta")):
        path = root / f"pkg{i}" / f"{name}.py"
        path.parent.mkdir(parents=True)
        path.write_text(module_text(name, 4))
    return root


@pytest.fixture(scope="module")
def tokenizer():
    from codejax.tokenizer import train_code_tokenizer
    return train_code_tokenizer([module_text("alpha")], vocab_size=400)


def test_alpaca_rows_are_read_by_codejax_data(src, tokenizer, tmp_path):
    from codejax.data import build_datasets

    summary = run(tmp_path, str(src), tasks=TASKS, keep_unknown_license=True, eval_fraction=0.3,
                  mix_strategy="equal")
    train, held = read_rows(tmp_path, "train"), read_rows(tmp_path, "eval")
    assert train and held
    assert {r["task"] for r in train} == {"function_impl", "docstring", "completion"}
    assert all({"instruction", "input", "output", "repo", "path", "difficulty"} <= r.keys() for r in train)
    assert not {r["path"].split("/")[0] for r in train} & {r["path"].split("/")[0] for r in held}
    prefs = read_rows(tmp_path, "preference-train") + read_rows(tmp_path, "preference-eval")
    assert prefs and all({"prompt", "chosen", "rejected"} <= r.keys() for r in prefs)
    assert all(r["chosen"] != r["rejected"] for r in prefs)
    # Equal mixing: every SFT task gets the same number of training rows (up to rounding).
    counts = collections.Counter(r["task"] for r in train)
    assert max(counts.values()) - min(counts.values()) <= 1
    assert summary["rows"]["train"] == len(train)
    data = build_datasets(tokenizer=tokenizer, train_paths=str(tmp_path / "train-*.jsonl"),
                          eval_paths=str(tmp_path / "eval-*.jsonl"), fmt="alpaca", seq_len=512, batch_size=2,
                          num_epochs=1)
    assert data.stats["rows_read"] == len(train) + len(held) and data.stats["rows_skipped"] == 0
    batch = next(iter(data.train))
    assert batch["inputs"].shape == (2, 512) and batch["weights"].sum() > 0


def test_chat_rows_are_read_by_codejax_data(src, tokenizer, tmp_path):
    from codejax.data import build_datasets

    run(tmp_path, str(src), tasks="function_impl", keep_unknown_license=True, row_format="chat",
        eval_fraction=0.0)
    rows = read_rows(tmp_path, "train")
    assert rows and all([m["role"] for m in r["messages"]] == ["user", "assistant"] for r in rows)
    data = build_datasets(tokenizer=tokenizer, train_paths=str(tmp_path / "train-*.jsonl"), fmt="chat",
                          seq_len=512, batch_size=1, num_epochs=1)
    assert data.stats["rows_read"] == len(rows) and data.stats["rows_skipped"] == 0


def test_task_rows_are_deterministic_and_mixed_by_weights(src, tmp_path):
    kwargs = dict(tasks="function_impl,completion", keep_unknown_license=True, eval_fraction=0.0,
                  mix_strategy="weights", mix_weights="completion=3,function_impl=1", mix_total=40)
    run(tmp_path / "a", str(src), **kwargs)
    run(tmp_path / "b", str(src), workers=2, **kwargs)
    a, b = (tmp_path / d / "train-00000-of-00001.jsonl" for d in "ab")
    assert a.read_bytes() == b.read_bytes()
    counts = collections.Counter(r["task"] for r in read_rows(tmp_path / "a", "train"))
    assert counts == {"completion": 30, "function_impl": 10}


def test_task_rows_sharing_an_eval_ngram_are_dropped(src):
    config = make_config(str(src), tasks="function_impl,docstring", keep_unknown_license=True)
    s = settings_from_config(config)
    text = module_text("alpha", 4)
    record = {"content": text, "path": "pkg0/alpha.py", "repo": "proj", "license": "unknown", "language": "python",
              "source": "x", "size": len(text), "meta": {}}
    stages.init_worker(s, None)
    rows, _ = stages.task_rows(record, stages.file_rng(0, "proj", "pkg0/alpha.py"))
    leaked = next(r for r in rows if r["task"] == "function_impl")
    grams = frozenset(decontam.ngrams(leaked["output"], 10))
    assert grams
    stages.init_worker(s, grams)
    result = stages.build_file_rows((record, "train"))
    assert result["decontaminated"]["function_impl"] >= 1
    assert leaked not in result["rows"] and len(result["rows"]) == len(rows) - sum(result["decontaminated"].values())


def test_unknown_task_or_option_is_named():
    with pytest.raises(ValueError, match="no_such_task"):
        settings_from_config(make_config("stdlib", tasks="fim,no_such_task"))
    # Task options are data_pipeline fields, so the locked config names an unknown one.
    with pytest.raises(AttributeError, match="bogus"):
        settings_from_config(make_config("stdlib", tasks="fim", bogus=1))
    s = settings_from_config(make_config("stdlib", tasks="fim", fim_mode="spm", sandbox_timeout_s=2.5,
                                         max_body_lines=30))
    options = s.task_options()
    assert (options.fim_mode, options.sandbox_timeout_s, options.max_body_lines) == ("spm", 2.5, 30)
    assert options.augmentations  # '' = every augmentation


def test_file_rng_is_stable():
    assert stages.file_rng(3, "r", "a.py").random() == stages.file_rng(3, "r", "a.py").random()
    assert stages.file_rng(3, "r", "a.py").random() != stages.file_rng(4, "r", "a.py").random()
    assert isinstance(stages.file_rng(0, "r", "p"), random.Random)
    assert json.dumps(stages.file_rng(0, "r", "p").random())  # a plain float
