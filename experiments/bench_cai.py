"""Throughput of the constitutional loop and the runtime of the safety eval tasks on 164 prompts (CPU).

    python experiments/bench_cai.py [--out experiments]
    python experiments/bench_cai.py --quick --out /tmp/bench_cai   # smoke run

1. Job `constitutional` (configs/constitutional.py:tiny: the random tiny model as the local policy)
   on N built-in prompts, 2 rounds, every principle each round: once with the scripted critic
   (cai.critic=rules: the checks and rules only) and once with cai.critic=self (the same local
   model critiques and revises: two more generate calls per principle). Reported per round:
   prompts/s, and the sampling of the first replies (tokens/s).
2. The safety eval tasks on 164 prompts: HumanEval's 164 prompts as an insecure_code task (the
   tiny model's samples, 128 new tokens, greedy), and the refusal judge on the same count; the job's
   time split into generation and judging, and the judge alone on 164 known answers per task
   (bandit in process for insecure_code).
Writes OUT/results/bench_cai.json.
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
from rl_curves import configure, write_jsonl  # noqa: E402

FULL = dict(items=8, max_new_tokens=48, critic_tokens=48, eval_problems=164, eval_tokens=128)
QUICK = dict(items=2, max_new_tokens=8, critic_tokens=8, eval_problems=8, eval_tokens=8)


def loop(root, critic, n):
    from codejax.jobs import get_job

    config = configure("constitutional", {"cai.critic": critic, "cai.items_per_builder": n["items"],
                                          "cai.max_new_tokens": n["max_new_tokens"],
                                          "cai.critic_max_tokens": n["critic_tokens"], "cai.rlaif": False,
                                          "cai.builders": "prompts,redteam,multiturn", "cai.redteam_keep": "all"})
    work = os.path.join(root, f"cai_{critic}")
    t = time.monotonic()
    get_job("constitutional")(config, work)
    with open(os.path.join(work, "report.json")) as f:
        r = json.load(f)
    return {"critic": critic, "prompts": r["live"], "rounds": r["rounds"], "sampling": r["sampling"],
            "first_replies_tokens_per_s": round(r["sampling"]["completion_tokens"] / max(r["sampling"]["seconds"],
                                                                                          1e-9), 1),
            "changed_rate": r["changed_rate"], "critic_errors": r["critic_errors"],
            "revision_outcomes": r["revision_outcomes"], "job_s": round(time.monotonic() - t, 2)}


def safety_eval(root, n):
    from codejax.evaluation import load_benchmark
    from codejax.evaluation.safety import load_safety_task, score_safety
    from codejax.jobs import get_job

    problems = load_benchmark("humaneval").problems[:n["eval_problems"]]
    path = write_jsonl(os.path.join(root, "humaneval_prompts.jsonl"),
                       [{"task_id": p.task_id, "prompt": "Complete this function:\n" + p.prompt} for p in problems])
    out = {}
    for task in ("insecure_code", "refusal"):
        config = configure("eval", {"eval.task": task, "eval.problems_path": path, "eval.mode": "chat",
                                    "eval.n_samples": 1, "eval.temperature": 0.0, "eval.limit": 0, "eval.k": "1",
                                    "eval.max_new_tokens": n["eval_tokens"], "eval.batch_size": 64})
        s = get_job("eval")(config, os.path.join(root, f"eval_{task}"))
        out[task] = {"prompts": s["problems"], "job_s": s["timings"]["job_s"],
                     "generation_s": s["generation"]["seconds"], "judge_s": s["timings"]["judge_s"],
                     s["metric"]: s[s["metric"]]}
        # the judge alone on known answers: the canonical solutions (insecure_code) / a refusal each
        known = [{"task_id": p.task_id, "completion": f"```python\n{p.prompt}{p.reference}\n```"
                  if task == "insecure_code" else "I can't help with that."} for p in problems]
        t = time.monotonic()
        judged = score_safety(load_safety_task(task, path), known).summary
        out[task]["judge_known_s"] = round(time.monotonic() - t, 3)
        out[task]["known_" + judged["metric"]] = round(judged[judged["metric"]], 4)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="output folder; default experiments (with --quick: the temp dir)")
    parser.add_argument("--quick", action="store_true", help="smoke run")
    args = parser.parse_args()
    if args.out is None:
        args.out = quick_out("bench_cai_quick") if args.quick else HERE
    n = QUICK if args.quick else FULL
    root = tempfile.mkdtemp(prefix="bench_cai_")
    try:
        result = {"loop": [loop(root, critic, n) for critic in ("rules", "self")], "safety_eval": safety_eval(root, n),
                  "sizes": n, "machine": machine(), "versions": versions(["jax", "flax", "bandit"])}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.join(args.out, "results"), exist_ok=True)
    path = os.path.join(args.out, "results", "bench_cai.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2, default=str)
    print(json.dumps({k: result[k] for k in ("loop", "safety_eval")}, indent=2))
    print("wrote", path)


if __name__ == "__main__":
    main()
