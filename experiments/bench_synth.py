"""Synthetic-data throughput per method on the CPU with the local backend (codejax's sampler in process).

    python experiments/bench_synth.py [--out experiments] [--items 32] [--max-new-tokens 128]
    python experiments/bench_synth.py --quick --out /tmp/bench_synth

Runs the synth job's engine (configs/synth.py:tiny: a random tiny model, so every reply runs to
max_new_tokens and the figures are an upper bound on tokens per item) twice in one workdir: the
first run generates (its seconds include the sampler's compiles, one per prompt-length bucket),
the second finds every completion in the cache and measures what quality control costs. Reports
items/s and tokens/s per method, the QC seconds, and the cached rerun's wall time.
Writes OUT/results/bench_synth.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from benchinfo import machine, quick_out, versions  # noqa: E402


def run(work, items, max_new_tokens):
    from codejax.config import load_config_file
    from codejax.synth import run_synth

    config = load_config_file(os.path.join(os.path.dirname(HERE), "configs", "synth.py") + ":tiny")
    config.synth.items_per_method, config.synth.max_new_tokens = items, max_new_tokens
    config.synth.batch_size = min(16, items)
    config.train.progress_bar = False
    start = time.monotonic()
    summary = run_synth(config, work)
    with open(os.path.join(work, "report.json")) as f:
        report = json.load(f)
    return time.monotonic() - start, summary, report


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="output folder; default experiments (with --quick: the temp dir)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 items per method, 16 tokens")
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()
    if args.quick:
        args.items, args.max_new_tokens = 4, 16
    if args.out is None:
        args.out = quick_out("bench_synth_quick") if args.quick else HERE
    work = tempfile.mkdtemp(prefix="bench_synth_")
    try:
        wall, summary, report = run(work, args.items, args.max_new_tokens)
        rerun_wall, _, rerun = run(work, args.items, args.max_new_tokens)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    per_method = {m: {k: g[k] for k in ("candidates", "kept", "requests", "completion_tokens", "seconds",
                                        "items_per_s", "tokens_per_s")} for m, g in report["generation"].items()}
    out = {"quick": args.quick, "items_per_method": args.items, "max_new_tokens": args.max_new_tokens,
           "per_method": per_method, "wall_s": round(wall, 2), "generation_s": report["timing"]["generation_s"],
           "quality_s": report["timing"]["quality_s"], "candidates": report["candidates"], "kept": report["kept"],
           "cached_rerun": {"wall_s": round(rerun_wall, 2), "cache": rerun["cache"],
                            "quality_s": rerun["timing"]["quality_s"]},
           "machine": machine(), "versions": versions(["jax", "flax"])}
    os.makedirs(os.path.join(args.out, "results"), exist_ok=True)
    path = os.path.join(args.out, "results", "bench_synth.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps({m: (v["items_per_s"], v["tokens_per_s"]) for m, v in per_method.items()}, indent=1))
    print("wrote", path)


if __name__ == "__main__":
    main()
