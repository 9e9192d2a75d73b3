"""The whole pipeline on tiny trees: counted drops, cleaning, dedup across the split, reruns, bad input."""
import json
from pathlib import Path

import pytest
from codedata_helpers import EXPECTED_DROPS, make_config, make_tree, read_rows, run

from codejax.codedata import dedup, report, stages
from codejax.codedata.settings import settings_from_config


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("src"))


@pytest.fixture(scope="module")
def first_run(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return run(out, str(tree["root"])), out


def test_every_drop_is_counted_by_reason(first_run):
    summary, out = first_run
    rep = json.loads((out / "report.json").read_text())
    assert rep["dropped"] == EXPECTED_DROPS
    assert summary["files_listed"] == 9 + sum(EXPECTED_DROPS.values())
    assert summary["files_kept"] == 9
    # The funnel adds up: every listed file is kept or dropped at exactly one stage.
    assert rep["funnel"][-1]["files"] == summary["files_kept"]
    assert sum(f["dropped"] for f in rep["funnel"]) == summary["files_listed"] - summary["files_kept"]
    assert rep["events"]["license/MIT"] == summary["files_kept"] + 2  # + the two duplicates dropped later
    assert rep["dedup"]["near_clusters"] == 1 and rep["dedup"]["exact_duplicates"] == 1
    assert not (out / ".work").exists()


def test_kept_files_are_cleaned(first_run):
    _, out = first_run
    rows = {r["path"]: r for r in read_rows(out, "train") + read_rows(out, "eval")}
    personal = rows["extra/personal.py"]["text"]
    assert personal.startswith('# Author: <NAME> <<EMAIL>>\nPASSWORD = "<SECRET>"\nSERVER = "<IP_ADDRESS>"\n')
    assert "tool" in rows and rows["tool"]["language"] == "python"  # extensionless, python shebang
    assert all(r["license"] == "MIT" and r["task"] == "text" for r in rows.values())


def test_near_duplicates_never_span_train_and_eval(tree, first_run):
    _, out = first_run
    train, held = read_rows(out, "train"), read_rows(out, "eval")
    assert train and held
    paths = {r["path"] for r in train + held}
    copies = {f"{tree['train_pkg']}/core.py", f"{tree['eval_pkg']}/core_copy.py"}
    assert len(paths & copies) == 1  # the cluster kept one member, which sits on one side
    for a in train:
        sig_a = dedup.signature(a["text"], 128, 5)
        for b in held:
            assert dedup.estimated_jaccard(sig_a, dedup.signature(b["text"], 128, 5)) < 0.85, (a["path"], b["path"])
    eval_pkgs = {r["path"].split("/")[0] for r in held}
    assert not eval_pkgs & {r["path"].split("/")[0] for r in train}  # whole packages on one side


def test_rerun_is_identical_and_workers_do_not_matter(tree, first_run, tmp_path):
    _, out1 = first_run
    summary2 = run(tmp_path / "two_workers", str(tree["root"]), workers=2)
    summary3 = run(tmp_path / "again", str(tree["root"]))
    for summary, out in ((summary2, tmp_path / "two_workers"), (summary3, tmp_path / "again")):
        names = sorted(n for files in summary["outputs"].values() for n in files)
        assert names == sorted(n for n in (p.name for p in out1.iterdir()) if n.endswith(".jsonl"))
        for name in names:
            assert (out / name).read_bytes() == (out1 / name).read_bytes(), name
        rep, rep1 = (json.loads((d / "report.json").read_text()) for d in (out, out1))
        for r in (rep, rep1):
            r.pop("timing")
            r["config"].pop("workers")
        assert rep == rep1


def test_a_stage_that_raises_costs_only_that_file(tree, tmp_path, monkeypatch, caplog):
    real = stages.stage_pii

    def flaky(f, s):
        if f.ref["path"].endswith("gamma.py"):
            raise RuntimeError("boom")
        return real(f, s)

    monkeypatch.setattr(stages, "FILE_STAGES",
                        tuple((n, flaky if n == "pii" else fn) for n, fn in stages.FILE_STAGES))
    summary = run(tmp_path, str(tree["root"]))
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["dropped"] == {**EXPECTED_DROPS, "error/pii": 1}
    assert rep["events"]["errors/pii/RuntimeError"] == 1
    assert summary["files_kept"] == 8
    assert "gamma.py: stage pii raised RuntimeError: boom" in caplog.text


def test_unknown_licenses_are_dropped_or_kept_as_configured(tmp_path):
    src = tmp_path / "nolicense"
    src.mkdir()
    (src / "a.py").write_text("def f(x):\n    return x * 2\n\n\nprint(f(3))\n")
    out = run(tmp_path / "drop", str(src))
    assert out["dropped"] == {"license/unknown": 1}
    out = run(tmp_path / "keep", str(src), keep_unknown_license=True)
    assert out["files_kept"] == 1 and out["dropped"] == {}


def test_report_and_plots_are_written(tree, tmp_path):
    summary = run(tmp_path, str(tree["root"]), plots=True, curriculum="length")
    assert set(summary["plots"]) >= {"stage_counts.png", "file_size.png", "line_length.png", "difficulty.png"}
    for name in summary["plots"]:
        assert (tmp_path / "plots" / name).read_bytes()[:4] == b"\x89PNG"
    md = (tmp_path / "report.md").read_text()
    assert "| quality | " in md and "read/binary" in md and "## Deduplication" in md
    lengths = [len(r["text"]) for r in read_rows(tmp_path, "train")]
    assert lengths == sorted(lengths)  # curriculum: easy (short) first


def test_funnel_orders_stages():
    rows = report.funnel(10, {"read/binary": 2, "quality/generated": 1, "dedup/near": 3})
    assert [(r["stage"], r["files"]) for r in rows][:2] == [("listed", 10), ("read", 8)]
    assert rows[-1] == {"stage": "dedup/near", "files": 4, "dropped": 3}


@pytest.mark.parametrize("field,value", [("mix_strategy", "random"), ("split_by", "module"), ("output_format", "csv"),
                                         ("near_dedup_threshold", 0.999), ("security_severity", "CRITICAL"),
                                         ("curriculum_schedule", "buckets:x"), ("shard_rows", 0)])
def test_bad_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        settings_from_config(make_config("stdlib", **{field: value}))


def test_missing_source_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        run(tmp_path, str(tmp_path / "nowhere"))


def test_the_job_writes_parquet_that_codejax_data_reads(tree, tmp_path):
    from codejax.data import build_datasets
    from codejax.jobs import get_job
    from codejax.tokenizer import train_code_tokenizer

    config = make_config(str(tree["root"]), output_format="parquet", shard_rows=4)
    config.job = "data"
    summary = get_job("data")(config, str(tmp_path))
    assert summary["outputs"]["train"][0].endswith(".parquet") and len(summary["outputs"]["train"]) > 1
    assert (tmp_path / "config.json").exists() and (tmp_path / "summary.json").exists()
    tok = train_code_tokenizer([tree["original"]], vocab_size=400)
    data = build_datasets(tokenizer=tok, train_paths=str(tmp_path / "train-*.parquet"),
                          eval_paths=str(tmp_path / "eval-*.parquet"), fmt="text", seq_len=256, batch_size=2,
                          num_epochs=1)
    assert data.stats["rows_read"] == summary["rows"]["train"] + summary["rows"]["eval"]
    assert data.stats["rows_skipped"] == 0
    batch = next(iter(data.train))
    assert batch["inputs"].shape == (2, 256)
    assert Path(tmp_path, summary["outputs"]["eval"][0]).exists()
