"""Dedup, splits, mixing and curriculum: the global stages, on small in-memory inputs."""
import collections
import json
import os
import pathlib
import random

import pytest

from codejax.codedata import dedup, mixing, output, splits

BASE = "\n".join(f"def helper_{i}(value, scale={i}):\n    total = value * scale + {i}\n    return total - {i % 3}\n"
                 for i in range(25))


def test_exact_hash_ignores_whitespace_only():
    assert dedup.exact_hash("def f():\n    return 1\n") == dedup.exact_hash("def f():\n\treturn   1")
    assert dedup.exact_hash("def f():\n    return 1\n") != dedup.exact_hash("def f():\n    return 2\n")


def test_near_duplicates_cluster_and_the_first_key_leads():
    renamed = BASE.replace("helper_3(", "renamed_3(")
    edited = BASE.replace("    return total - 1\n", "    return total - 1  # changed\n", 1)
    unrelated = "\n".join(f"class Thing{i}:\n    items = [{i}, {i + 1}]\n" for i in range(40))
    keys = [("r", "z.py"), ("r", "a.py"), ("r", "m.py"), ("r", "u.py")]
    sigs = [dedup.signature(t, 128, 5) for t in (renamed, BASE, edited, unrelated)]
    assert dedup.estimated_jaccard(sigs[0], sigs[1]) >= 0.85
    assert dedup.estimated_jaccard(sigs[1], sigs[3]) < 0.2
    clusters = dedup.near_duplicate_clusters(keys, sigs, 0.85, 128)
    assert clusters == [[1, 2, 0]]  # a.py, m.py, z.py; u.py alone
    # More edits, and the pair falls below the threshold.
    far = BASE
    for i in range(0, 25, 3):
        far = far.replace(f"helper_{i}(value, scale={i})", f"other_{i}(x, y)")
    far_sig = dedup.signature(far, 128, 5)
    assert dedup.estimated_jaccard(far_sig, sigs[1]) < 0.85
    assert dedup.near_duplicate_clusters(keys[:2], [far_sig, sigs[1]], 0.85, 128) == []


def test_signatures_are_deterministic():
    assert (dedup.signature(BASE, 64, 5) == dedup.signature(BASE, 64, 5)).all()
    assert len(dedup.signature("x", 64, 5)) == 64  # a text shorter than a shingle still hashes


def test_split_keys_and_groups():
    assert splits.split_key("stdlib", "email/mime/text.py", "package") == "stdlib/email"
    assert splits.split_key("stdlib", "os.py", "package") == "stdlib/os"
    assert splits.split_key("stdlib", "email/mime/text.py", "directory") == "stdlib/email/mime"
    assert splits.split_key("repo", "a/b.py", "repo") == "repo"
    with pytest.raises(ValueError, match="split_by"):
        splits.split_key("r", "p", "module")
    # Every file of a package lands on the same side, and about eval_fraction of packages are held out.
    sides = {splits.assign_split("r", f"pkg{i}/m{j}.py", "package", 0.3, 7) for i in range(3) for j in range(5)}
    per_pkg = collections.defaultdict(set)
    for i in range(200):
        for j in range(3):
            per_pkg[i].add(splits.assign_split("r", f"pkg{i}/m{j}.py", "package", 0.3, 7))
    assert all(len(s) == 1 for s in per_pkg.values()) and sides
    held = sum(s == {"eval"} for s in per_pkg.values()) / len(per_pkg)
    assert 0.2 < held < 0.4


@pytest.mark.parametrize("strategy,temperature,weights,expected", [
    ("equal", 1.0, None, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}),
    ("proportional", 1.0, None, {"a": 0.8, "b": 0.15, "c": 0.05}),
    ("temperature", 1.0, None, {"a": 0.8, "b": 0.15, "c": 0.05}),
    ("weights", 1.0, {"a": 1.0, "c": 3.0}, {"a": 0.25, "c": 0.75}),
])
def test_mixture_shares(strategy, temperature, weights, expected):
    shares = mixing.mixture({"a": 160, "b": 30, "c": 10, "empty": 0}, strategy, temperature, weights)
    assert shares.keys() == expected.keys()
    for task, p in expected.items():
        assert shares[task] == pytest.approx(p)


def test_temperature_flattens_towards_equal():
    counts = {"big": 900, "small": 100}
    hot = mixing.mixture(counts, "temperature", 100.0)
    warm = mixing.mixture(counts, "temperature", 2.0)
    assert warm["small"] == pytest.approx(100 ** 0.5 / (900 ** 0.5 + 100 ** 0.5))
    assert 0.1 < warm["small"] < hot["small"] < 0.5


def test_allocate_sums_to_total():
    counts = mixing.allocate({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, 100)
    assert sum(counts.values()) == 100 and sorted(counts.values()) == [33, 33, 34]


def test_mix_samples_without_replacement_and_repeats_small_tasks():
    rows = {"a": [{"task": "a", "i": i} for i in range(100)], "b": [{"task": "b", "i": i} for i in range(10)]}
    mixed, stats = mixing.mix(rows, "equal", 1.0, {}, 60, random.Random(0))
    count = collections.Counter(r["task"] for r in mixed)
    assert count == {"a": 30, "b": 30}
    assert len({r["i"] for r in mixed if r["task"] == "a"}) == 30  # no repeats where there are enough rows
    assert stats["b"]["repeated"] == 20 and stats["a"]["repeated"] == 0
    again, _ = mixing.mix(rows, "equal", 1.0, {}, 60, random.Random(0))
    assert again == mixed
    natural, _ = mixing.mix(rows, "proportional", 1.0, {}, 0, random.Random(0))
    assert len(natural) == 110


def test_weights_parsing_errors_name_the_entry():
    assert mixing.parse_weights("fim=2, completion=0.5") == {"fim": 2.0, "completion": 0.5}
    for bad in ("fim", "fim=x", "fim=-1", "=2"):
        with pytest.raises(ValueError, match="mix_weights"):
            mixing.parse_weights(bad)


def test_curriculum_orders_by_difficulty():
    rng = random.Random(0)
    rows = [{"task": "t", "output": "x" * n, "difficulty": 100 - n} for n in rng.sample(range(1, 100), 40)]
    by_length = mixing.order(list(rows), "length", "sorted", rng)
    lengths = [len(r["output"]) for r in by_length]
    assert lengths == sorted(lengths)
    by_complexity = mixing.order(list(rows), "complexity", "sorted", rng)
    assert [r["difficulty"] for r in by_complexity] == sorted(r["difficulty"] for r in rows)
    bucketed = mixing.order(list(rows), "length", "buckets:4", rng)
    quarters = [[len(r["output"]) for r in bucketed[i * 10:(i + 1) * 10]] for i in range(4)]
    assert all(max(quarters[i]) < min(quarters[i + 1]) for i in range(3))  # easy -> hard buckets
    assert any(q != sorted(q) for q in quarters)  # shuffled inside
    assert mixing.order(list(rows), "none", "sorted", rng) == rows
    with pytest.raises(ValueError, match="curriculum_schedule"):
        mixing.order(rows, "length", "buckets:0", rng)


def test_shards_and_stale_shards(tmp_path):
    rows = [{"text": str(i)} for i in range(5)]
    assert output.write_shards(rows, tmp_path, "train", "jsonl", 2) == [
        "train-00000-of-00003.jsonl", "train-00001-of-00003.jsonl", "train-00002-of-00003.jsonl"]
    names = output.write_shards(rows, tmp_path, "train", "jsonl", 10)
    removed = output.remove_stale_shards(tmp_path, ["train"], set(names))
    assert len(removed) == 3 and sorted(p.name for p in tmp_path.iterdir()) == ["train-00000-of-00001.jsonl"]


def test_parquet_shards_keep_every_column(tmp_path):
    import pyarrow.parquet as pq

    rows = [{"instruction": "a", "output": "b", "task": "x"}, {"instruction": "c", "output": "d", "extra": 3}]
    (name,) = output.write_shards(rows, tmp_path, "train", "parquet", 10)
    assert pq.read_table(tmp_path / name).to_pylist() == [{**rows[0], "extra": None}, {**rows[1], "task": None}]


def _output_set(staging, rows, shard_rows, report):
    output.write_shards(rows, str(staging), "train", "jsonl", shard_rows)
    (staging / "plots").mkdir()
    (staging / "plots" / "funnel.png").write_bytes(b"png")
    for name in output.LAST:
        (staging / name).write_text(report)


def test_the_output_set_is_swapped_in_whole_and_a_kill_mid_swap_is_rolled_forward(tmp_path):
    staging = tmp_path / output.STAGING
    staging.mkdir()
    _output_set(staging, [{"i": i} for i in range(6)], 2, "run 1")  # 3 shards
    (staging / "plots" / "old_only.png").write_bytes(b"png")
    output.swap_in(str(tmp_path))
    assert not staging.exists() and not (tmp_path / output.SWAP_MARKER).exists()
    assert sorted(p.name for p in tmp_path.glob("train-*")) == [f"train-0000{i}-of-00003.jsonl" for i in range(3)]

    # A second run's set (one shard) whose swap is killed after the first move.
    staging = pathlib.Path(output.staging_dir(str(tmp_path)))
    _output_set(staging, [{"i": i} for i in range(6)], 10, "run 2")
    files = [f for f in sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
             if f not in output.LAST] + list(output.LAST)
    (tmp_path / output.SWAP_MARKER).write_text(json.dumps(files))
    os.replace(staging / files[0], tmp_path / files[0])
    assert output.finish_swap(str(tmp_path)) == files  # what the next run does first
    assert sorted(p.name for p in tmp_path.glob("train-*")) == ["train-00000-of-00001.jsonl"]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["funnel.png"]  # run 1's extra plot is gone
    assert all((tmp_path / name).read_text() == "run 2" for name in output.LAST)
    assert output.finish_swap(str(tmp_path)) == []  # nothing under way

    # A run killed while staging (no marker) leaves the outputs alone; the next run starts a fresh staging folder.
    (tmp_path / output.STAGING).mkdir()
    (tmp_path / output.STAGING / "train-00000-of-00009.jsonl").write_text("half")
    assert output.finish_swap(str(tmp_path)) == [] and (tmp_path / "report.md").read_text() == "run 2"
    assert os.listdir(output.staging_dir(str(tmp_path))) == []
