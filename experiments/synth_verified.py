"""Execution-verified synthetic data against the same count of unverified data, on held-out unit tests.

    python experiments/synth_verified.py [--out experiments]
    python experiments/synth_verified.py --quick --out /tmp/synth_verified   # smoke run

The task is the arithmetic-functions one (codejax/rl/environments.py): complete
`def f(x): '''Return x plus 3.'''  return x` with ` + 3`, checked by asserts in the sandbox.
1. A teacher is trained from scratch (SFT, configs/sft.py:tiny) on well-formed answers whose operator
   is right only 1/3 of the time: a teacher that writes plausible, often wrong code.
2. The synth engine (codejax.synth.run_synth, local backend on the teacher's training workdir)
   samples N completions for training-split prompts at temperature 1, through a generator
   registered here (`arith_complete`: the prompt is the instruction, the prompt plus completion the
   solution, the task's asserts the tests). One run with synth.verify=True (sandbox verification
   with mutants), one with verify=False; the second finds every completion in the first's cache.
3. Two students start from the teacher's weights and fine-tune for the same steps on the same number
   of rows: the verified rows, or as many rows drawn at random from the unverified ones
   (rejection-sampling fine-tuning against plain self-training).
4. pass@1 of teacher and students on the held-out split (operator/variable/constant combinations
   that no stage trains on), 10 samples per problem at T=0.6, scored in the sandbox by the eval job.
Writes OUT/results/synth_verified.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from benchinfo import machine, quick_out, versions  # noqa: E402
from rl_curves import configure, write_jsonl  # noqa: E402 - the same job runner as the other experiments

FULL = dict(teacher_rows=4096, teacher_steps=300, candidates=768, student_steps=120, eval_samples=10)
QUICK = dict(teacher_rows=256, teacher_steps=4, candidates=32, student_steps=2, eval_samples=1)


def register_arith_generator():
    from codejax.rl.environments import arith_prompts
    from codejax.synth import Item, register_generator

    @register_generator("arith_complete")
    def arith_complete(ctx, n):
        rows = arith_prompts(n, seed=11, split="train")
        items = []
        for first in range(0, n, ctx.settings.batch_size):
            part = rows[first:first + ctx.settings.batch_size]
            for row, c in zip(part, ctx.ask("arith_complete", [r["prompt"] for r in part])):
                items.append(Item("arith_complete", row["prompt"], row["prompt"] + c.text, "\n".join(row["tests"]),
                                  {"completion": c.text}, finish_reason=c.finish_reason))
            ctx.progress("arith_complete", len(items))
        return items


def rows_of(workdir):
    out = []
    for name in sorted(os.listdir(workdir)):
        if name.startswith("train-") and name.endswith(".jsonl"):
            with open(os.path.join(workdir, name)) as f:
                out += [json.loads(line) for line in f]
    return out


def synth(root, name, teacher_dir, n, verify):
    from codejax.config import load_config_file
    from codejax.synth import run_synth

    config = load_config_file(os.path.join(os.path.dirname(HERE), "configs", "synth.py") + ":tiny")
    s = config.synth
    s.methods, s.items_per_method, s.model_path, s.chat = "arith_complete", n, teacher_dir, False
    s.temperature, s.top_p, s.max_new_tokens, s.batch_size = 1.0, 1.0, 8, 64
    s.verify, s.dedup, s.decontam_sets, s.mutants = verify, False, "", 2
    config.train.progress_bar = False
    work = os.path.join(root, "synth", "cache_shared")  # both runs share one workdir: one cache
    summary = run_synth(config, work)
    with open(os.path.join(work, "report.json")) as f:
        report = json.load(f)
    summary = {"kept": summary["kept"], "candidates": summary["candidates"], "seconds": summary["seconds"],
               "generation": report["generation"]["arith_complete"], "counts": report["counts"]["arith_complete"],
               "verification": report["verification"]}
    rows = rows_of(work)
    keep = os.path.join(root, f"{name}.jsonl")
    # the student reads prompt_completion rows: the prompt and the teacher's completion
    write_jsonl(keep, [{"prompt": r["instruction"], "completion": _completion(r)} for r in rows])
    return summary, keep, len(rows)


def _completion(row):
    """The teacher's completion: the solution minus the prompt (the instruction)."""
    solution = row["output"][len("```python\n"):-len("\n```")]
    return solution[len(row["instruction"]):]


def sft(root, name, train_file, steps, hf_path="", lr=1e-3, rows=0):
    from codejax.jobs import get_job

    config = configure("sft", {"data.train_paths": train_file, "data.format": "prompt_completion",
                               "data.seq_len": 64, "data.batch_size": 32, "data.eval_fraction": 0.05,
                               "train.steps": steps, "train.eval_every": 0, "train.checkpoint_every": 0,
                               "optim.lr": lr, "optim.warmup_steps": min(10, steps)})
    if hf_path:
        config.model.hf_path, config.model.preset = hf_path, ""
    config.train.export_hf = True
    work = os.path.join(root, name)
    get_job("sft")(config, work)
    return work


def pass_at_1(root, name, run_dir, problems, samples):
    from codejax.jobs import get_job

    config = configure("eval", {"eval.problems_path": problems, "eval.checkpoint_dir": run_dir,
                                "eval.n_samples": samples, "eval.temperature": 0.6 if samples > 1 else 0.0,
                                "eval.k": "1", "eval.max_new_tokens": 8, "eval.batch_size": 64, "eval.limit": 0})
    return get_job("eval")(config, os.path.join(root, "eval_" + name))["pass_at_k"]["pass@1"]


def run_all(args, n, root):
    from codejax.rl.environments import arith_humaneval, arith_sft_rows

    t0 = time.monotonic()
    register_arith_generator()
    teacher_rows = write_jsonl(os.path.join(root, "teacher.jsonl"),
                               arith_sft_rows(n["teacher_rows"], seed=5, correct_fraction=1 / 3, split="train"))
    teacher = sft(root, "teacher", teacher_rows, n["teacher_steps"])
    verified_summary, verified_file, n_verified = synth(root, "verified", teacher, n["candidates"], True)
    unverified_summary, unverified_file, n_all = synth(root, "unverified", teacher, n["candidates"], False)
    with open(unverified_file) as f:
        unverified = [json.loads(line) for line in f]
    sample = random.Random(0).sample(unverified, min(n_verified, len(unverified)))
    write_jsonl(unverified_file, sample)
    problems = write_jsonl(os.path.join(root, "held_out.jsonl"), arith_humaneval("held_out"))
    hf = os.path.join(teacher, "hf_model")
    results = {"teacher": pass_at_1(root, "teacher", teacher, problems, n["eval_samples"])}
    for name, path in (("verified", verified_file), ("unverified", unverified_file)):
        if not sample:  # a teacher that never passes (the --quick one): nothing to fine-tune on
            results[name] = None
            continue
        student = sft(root, "student_" + name, path, n["student_steps"], hf_path=hf, lr=3e-4)
        results[name] = pass_at_1(root, name, student, problems, n["eval_samples"])
    out = {
        "task": "arith_functions, held-out split", "candidates": n["candidates"],
        "verified_rows": n_verified, "unverified_rows_available": n_all, "rows_per_student": len(sample),
        "verified_fraction": round(n_verified / max(n_all, 1), 3), "held_out_problems": len(arith_humaneval("held_out")),
        "pass_at_1": results, "sizes": n,
        "synth_verified_run": verified_summary, "synth_unverified_run": unverified_summary,
        "seconds": round(time.monotonic() - t0, 1), "machine": machine(), "versions": versions(["jax", "flax"]),
    }
    os.makedirs(os.path.join(args.out, "results"), exist_ok=True)
    path = os.path.join(args.out, "results", "synth_verified.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2, default=str)
    print(json.dumps({k: out[k] for k in ("pass_at_1", "verified_rows", "rows_per_student", "verified_fraction",
                                          "seconds")}, indent=2))
    print("wrote", path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="output folder; default experiments (with --quick: the temp dir)")
    parser.add_argument("--quick", action="store_true", help="smoke run: a few steps of each job")
    parser.add_argument("--keep", default="", help="keep the runs in this folder instead of a temp dir")
    args = parser.parse_args()
    if args.out is None:
        args.out = quick_out("synth_verified_quick") if args.quick else HERE
    root = args.keep or tempfile.mkdtemp(prefix="synth_verified_")
    os.makedirs(root, exist_ok=True)
    try:
        run_all(args, QUICK if args.quick else FULL, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
