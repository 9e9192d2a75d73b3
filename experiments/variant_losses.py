"""Regression check: run every config variant's tiny form and record its losses, to compare two checkouts.

    python experiments/variant_losses.py --out /tmp/after.json
    git stash && python experiments/variant_losses.py --out /tmp/before.json && git stash pop
    python experiments/variant_losses.py --compare /tmp/before.json --out /tmp/after.json
    python experiments/variant_losses.py --quick --out /tmp/v.json        # two variants: a smoke run

Each variant is a config file's `:tiny` form (plus a few overrides that reach the other code
paths: gradient accumulation, every DPO loss type, the precomputed reference, PEFT policies,
RLOO, PPO with a separate value model) run through `codejax.jobs.get_job` on data built from
the arithmetic-function environment: a tokenizer and SFT, text, preference and prompt files
written to --data. Recorded per variant: every metrics.jsonl row's losses, rewards, KL,
accuracy and grad norms, and a hash of every JSONL/parquet file the job wrote (so the data
pipeline's shards and the eval's per-problem results are compared too). --compare prints the
largest absolute difference per variant; a refactor that changes no behaviour gives 0.
Timings (`wall_s`, `*_per_s`, `time/*`) are left out: they differ run to run.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import traceback

from benchinfo import machine, quick_out

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this checkout's codejax, whichever one is installed
QUICK = ("sft:tiny", "grpo:tiny")
METRIC_WORDS = ("loss", "reward", "kl", "accuracy", "grad_norm", "eval/")
TIMING_WORDS = ("per_s", "time", "seconds")


def write_jsonl(path: str, rows: list[dict]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_data(data_dir: str) -> None:
    """A tokenizer and the data files of every variant, built once per --data directory."""
    if os.path.exists(os.path.join(data_dir, "done")):
        return
    try:
        from codejax.rl.environments import arith_pairs, arith_prompts, arith_sft_rows
    except ImportError:  # a checkout from before the restructure, to compare against
        from codejax.rl.tasks import arith_pairs, arith_prompts, arith_sft_rows
    from codejax.tokenizer import save_tokenizer, train_code_tokenizer

    os.makedirs(data_dir, exist_ok=True)
    texts = [r["prompt"] + r["answer"] for r in arith_prompts(2000, seed=99)]
    save_tokenizer(train_code_tokenizer(texts, vocab_size=320, min_frequency=1), os.path.join(data_dir, "tokenizer"))
    write_jsonl(os.path.join(data_dir, "pairs.jsonl"), arith_pairs(512, seed=1))
    write_jsonl(os.path.join(data_dir, "sft.jsonl"), arith_sft_rows(512, seed=3))
    write_jsonl(os.path.join(data_dir, "text.jsonl"),
                [{"text": r["prompt"] + r["answer"]} for r in arith_prompts(512, seed=5)])
    open(os.path.join(data_dir, "done"), "w").close()


def variants(data_dir: str) -> dict[str, tuple[str, dict]]:
    """name -> (config file and variant, field overrides)."""
    common = {"tokenizer.path": os.path.join(data_dir, "tokenizer"), "train.progress_bar": False}
    sft = {**common, "data.train_paths": os.path.join(data_dir, "sft.jsonl"), "data.format": "prompt_completion"}
    pairs = {**common, "data.train_paths": os.path.join(data_dir, "pairs.jsonl")}
    out = {
        "pretrain:tiny": ("pretrain.py:tiny", {**common, "data.train_paths": os.path.join(data_dir, "text.jsonl")}),
        "sft:tiny": ("sft.py:tiny", sft),
        "sft:tiny+accum": ("sft.py:tiny", {**sft, "optim.grad_accum_steps": 2}),
    }
    for method in ("", "qlora_", "dora_", "prefix_", "prompt_", "adapter_", "ia3_"):
        out[f"sft_peft:{method}tiny"] = (f"sft_peft.py:{method}tiny", sft)
    out["reward:tiny"] = ("reward.py:tiny", pairs)
    for loss_type in ("sigmoid", "ipo", "simpo", "orpo"):
        out[f"dpo:tiny+{loss_type}"] = ("dpo.py:tiny", {**pairs, "preference.loss_type": loss_type, "train.steps": 10})
    out["dpo:tiny+precompute"] = ("dpo.py:tiny", {**pairs, "preference.precompute_ref": True, "train.steps": 10})
    out["dpo:tiny+lora"] = ("dpo.py:tiny", {**pairs, "peft.method": "lora", "train.steps": 10})
    out["grpo:tiny"] = ("grpo_code.py:tiny", common)
    out["grpo:tiny+kl"] = ("grpo_code.py:tiny", {**common, "rl.kl_coef": 0.1, "rl.loss_agg": "grpo"})
    out["grpo:tiny+rloo"] = ("grpo_code.py:tiny", {**common, "rl.algorithm": "rloo", "rl.loss_agg": "dr_grpo"})
    out["grpo:tiny+lora"] = ("grpo_code.py:tiny", {**common, "peft.method": "lora", "rl.kl_coef": 0.1})
    out["ppo:tiny"] = ("ppo.py:tiny", common)
    out["ppo:tiny+separate"] = ("ppo.py:tiny", {**common, "rl.value_head": "separate", "rl.whiten_rewards": True})
    out["eval:tiny"] = ("eval.py:tiny", common)
    out["data_pipeline:tiny"] = ("data_pipeline.py:tiny", {"data_pipeline.progress_bar": False})
    return out


def _set(config, dotted: str, value) -> None:
    section, field = dotted.split(".")
    setattr(getattr(config, section), field, value)


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in ("wall_s", "seconds")}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def record(workdir: str) -> dict:
    """The variant's metric rows (no timings) and a hash of each data file it wrote."""
    rows = []
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(metrics_path):
        with open(metrics_path, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                rows.append({k: v for k, v in row.items() if k == "step" or (
                    isinstance(v, (int, float)) and any(w in k for w in METRIC_WORDS)
                    and not any(w in k for w in TIMING_WORDS))})
    files = {}
    for name in sorted(os.listdir(workdir)):
        if name.endswith((".jsonl", ".parquet")) and name not in ("metrics.jsonl", "samples.jsonl"):
            path = os.path.join(workdir, name)
            if name == "results.jsonl":  # per-sample wall times differ run to run
                with open(path, encoding="utf-8") as f:
                    data = json.dumps([_without_timings(json.loads(line)) for line in f]).encode()
            else:
                with open(path, "rb") as f:
                    data = f.read()
            files[name] = hashlib.sha256(data).hexdigest()[:16]
    return {"metrics": rows, "files": files}


def run_all(data_dir: str, names, work_root: str) -> dict:
    from codejax.config import load_config_file
    from codejax.jobs import get_job

    results = {}
    for name, (spec, overrides) in variants(data_dir).items():
        if names and name not in names:
            continue
        workdir = os.path.join(work_root, name.replace(":", "_").replace("+", "_"))
        shutil.rmtree(workdir, ignore_errors=True)
        start = time.time()
        try:
            config = load_config_file(os.path.join(ROOT, "configs", spec))
            for key, value in overrides.items():
                _set(config, key, value)
            get_job(config.job)(config, workdir)
            results[name] = record(workdir)
        except Exception as e:  # noqa: BLE001 - one broken variant must not hide the others
            traceback.print_exc()
            results[name] = {"error": f"{type(e).__name__}: {e}"}
        print(f"{name}: {time.time() - start:.0f} s", file=sys.stderr, flush=True)
    return results


def compare(before: dict, after: dict) -> dict:
    """Per variant: the largest absolute metric difference, or what does not line up."""
    out = {}
    for name in sorted(set(before) | set(after)):
        a, b = before.get(name), after.get(name)
        if a is None or b is None or "error" in a or "error" in b:
            out[name] = {"problem": "missing or failed: " + str((a or {}).get("error") or (b or {}).get("error"))}
            continue
        problems, worst = [], 0.0
        if a["files"] != b["files"]:
            problems.append(f"files differ: {a['files']} vs {b['files']}")
        if len(a["metrics"]) != len(b["metrics"]):
            problems.append(f"{len(a['metrics'])} vs {len(b['metrics'])} metric rows")
        for x, y in zip(a["metrics"], b["metrics"]):
            for key in sorted(set(x) | set(y)):
                if key not in x or key not in y:
                    problems.append(f"step {x.get('step')}: {key} in one run only")
                elif not (x[key] != x[key] and y[key] != y[key]):  # NaN on both sides is equal
                    worst = max(worst, abs(x[key] - y[key]))
        out[name] = {"max_abs_diff": worst, **({"problems": sorted(set(problems))} if problems else {})}
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="", help="data directory, built on first use ('' = a temp dir)")
    p.add_argument("--variants", default="", help="comma list of variant names ('' = all)")
    p.add_argument("--compare", default="", help="an earlier --out JSON to compare against")
    p.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}: a smoke run")
    p.add_argument("--out", default="", help="JSON path ('' = experiments/results/variant_losses.json; "
                                             "with --quick, the temp dir)")
    args = p.parse_args(argv)
    names = [n for n in args.variants.split(",") if n] or (list(QUICK) if args.quick else [])
    out = args.out or (quick_out("variant_losses_quick.json") if args.quick
                       else os.path.join(ROOT, "experiments", "results", "variant_losses.json"))
    with tempfile.TemporaryDirectory(prefix="variant-losses-") as tmp:
        data_dir = args.data or os.path.join(tmp, "data")
        make_data(data_dir)
        results = run_all(data_dir, names, os.path.join(tmp, "runs"))
    report = {"machine": machine(), "variants": results}
    if args.compare:
        with open(args.compare, encoding="utf-8") as f:
            report["comparison"] = compare(json.load(f)["variants"], results)
        for name, row in report["comparison"].items():
            print(f"{name}: max |diff| {row.get('max_abs_diff', 'n/a')} {'; '.join(row.get('problems', []))}")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
    failed = [n for n, r in results.items() if "error" in r]
    if failed:
        raise SystemExit(f"variants failed: {failed}")


if __name__ == "__main__":
    main()
