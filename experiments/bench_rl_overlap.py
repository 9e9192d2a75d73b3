"""GRPO step time on CPU with and without `rl.overlap`, split into generation, reward, score and update.

    python experiments/bench_rl_overlap.py [--out experiments]
    python experiments/bench_rl_overlap.py --quick --out /tmp/overlap   # smoke run: 3 steps, one repeat

The job is `configs/grpo_code.py:tiny` on the built-in arithmetic task (unit-test rewards run in
the sandbox), with 8 prompts x 8 completions of up to 16 tokens per step. Each setting runs
`repeats` times, alternating (off, on, off, on, ...) so that machine drift and the compilation
cache favour neither. Per step the loop logs train/time/*:

    generation_s  the sampler            } with overlap these run in a background thread,
    reward_s      the reward functions   } concurrently with the previous step's update
    wait_s        how long the step waited for its rollouts (without overlap: generation + reward)
    score_s       the no-grad pass for old log-probs, and the advantages
    update_s      the optimizer steps
    step_s        the whole step

The figures are medians over the steps after the first two (compilation), over all repeats.
Writes OUT/results/bench_rl_overlap.json (OUT defaults to experiments/, with --quick the temp dir).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from benchinfo import machine, quick_out, versions  # noqa: E402

KEYS = ("generation_s", "reward_s", "wait_s", "score_s", "update_s", "step_s")
FULL = dict(steps=10, repeats=2, skip=2)
QUICK = dict(steps=3, repeats=1, skip=1)


def one_run(workdir: str, overlap: bool, steps: int) -> list[dict]:
    from codejax.config import load_config_file
    from codejax.jobs import get_job
    from codejax.train.metrics import read_metrics

    config = load_config_file(os.path.join(ROOT, "configs", "grpo_code.py") + ":tiny")
    config.train.progress_bar = False
    config.train.steps, config.train.eval_every, config.train.checkpoint_every = steps, 0, 0
    config.train.eval_at_start, config.train.log_every = False, 1
    config.rl.prompts_per_step, config.rl.group_size, config.rl.max_new_tokens = 8, 8, 16
    config.rl.overlap = overlap
    get_job("grpo")(config, workdir)
    return [r for r in read_metrics(os.path.join(workdir, "metrics.jsonl")) if "train/time/step_s" in r]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="output folder; default experiments (with --quick: the temp dir)")
    parser.add_argument("--quick", action="store_true", help="smoke run: a few steps, one repeat")
    args = parser.parse_args()
    if args.out is None:
        args.out = quick_out("bench_rl_overlap_quick") if args.quick else HERE
    n = QUICK if args.quick else FULL
    info = machine()
    root = tempfile.mkdtemp(prefix="bench_rl_overlap_")
    steps: dict[str, list[dict]] = {"off": [], "on": []}
    try:
        for repeat in range(n["repeats"]):
            for name, overlap in (("off", False), ("on", True)):
                rows = one_run(os.path.join(root, f"{name}{repeat}"), overlap, n["steps"])
                steps[name].extend(r for r in rows if r["step"] > n["skip"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    medians = {name: {k: round(statistics.median(r[f"train/time/{k}"] for r in rows), 4) for k in KEYS}
               for name, rows in steps.items()}
    result = {"quick": args.quick, "machine": info, "versions": versions(["jax", "flax"]), "date": time.strftime("%Y-%m-%d"),
              "settings": {**n, "prompts_per_step": 8, "group_size": 8, "max_new_tokens": 16},
              "steps_measured": {k: len(v) for k, v in steps.items()}, "median_s": medians,
              "speedup": round(medians["off"]["step_s"] / medians["on"]["step_s"], 3)}
    os.makedirs(os.path.join(args.out, "results"), exist_ok=True)
    path = os.path.join(args.out, "results", "bench_rl_overlap.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({"median_s": medians, "speedup": result["speedup"]}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
