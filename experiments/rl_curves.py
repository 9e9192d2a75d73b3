"""Learning curves of the reward, dpo, grpo and ppo jobs on the arithmetic-function task (CPU, minutes).

    python experiments/rl_curves.py [--out experiments]
    python experiments/rl_curves.py --quick --out /tmp/rl_curves   # smoke run: a few steps of each job

The task (codejax/rl/environments.py): complete a `def f(x):` whose docstring says "Return x plus 3."
and whose body reads `return x` with " + 3", checked by three asserts in the sandbox. A 114K-param Llama and a 320-token BPE
tokenizer are trained here from scratch:
1. reward model on 512 pairs (right operator chosen over a wrong one), held-out accuracy;
2. DPO on the same pairs, held-out implicit-reward accuracy and margin;
3. SFT warm start on answers whose operator is right a third of the time, then GRPO and PPO
   with the unit-test reward: held-out greedy reward and the KL to the SFT reference.
Writes OUT/rl_learning_curves.png and OUT/results/rl_curves.json (OUT defaults to experiments/,
or with --quick to a folder in the temp dir, so a smoke run never overwrites the committed figure).
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
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from benchinfo import machine, quick_out, versions  # noqa: E402

# Steps and sizes of each run: the README figure, and --quick's smoke run (same jobs, same code path).
FULL = dict(reward_steps=80, dpo_steps=60, eval_every=10, sft_steps=150, grpo_steps=40, grpo_prompts=8,
            group_size=8, ppo_steps=30, ppo_prompts=64, ppo_epochs=2, rl_eval_every=5)
QUICK = dict(reward_steps=4, dpo_steps=4, eval_every=2, sft_steps=6, grpo_steps=2, grpo_prompts=4,
             group_size=4, ppo_steps=2, ppo_prompts=8, ppo_epochs=1, rl_eval_every=2)


def write_jsonl(path, rows):
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def configure(name, overrides):
    from codejax.config import load_config_file
    config = load_config_file(os.path.join(ROOT, "configs", f"{name}.py") + ":tiny")
    for key, value in overrides.items():
        section, field = key.split(".")
        setattr(getattr(config, section), field, value)
    config.train.progress_bar = False
    return config


def metric(workdir, key):
    from codejax.train.metrics import read_metrics
    return [(r["step"], r[key]) for r in read_metrics(os.path.join(workdir, "metrics.jsonl")) if key in r]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="output folder; default experiments (with --quick: the temp dir)")
    parser.add_argument("--quick", action="store_true", help="smoke run: a few steps of each job")
    args = parser.parse_args()
    if args.out is None:
        args.out = quick_out("rl_curves_quick") if args.quick else HERE
    root = tempfile.mkdtemp(prefix="rl_curves_")  # the runs' workdirs: removed at the end
    try:
        run_all(args, QUICK if args.quick else FULL, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_all(args, n, root):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from codejax.jobs import get_job
    from codejax.rl.environments import arith_pairs, arith_prompts, arith_sft_rows
    from codejax.tokenizer import save_tokenizer, train_code_tokenizer

    tok = os.path.join(root, "tokenizer")
    save_tokenizer(train_code_tokenizer([r["prompt"] + r["answer"] for r in arith_prompts(2000, seed=99)],
                                        vocab_size=320, min_frequency=1), tok)
    pairs = dict(train_paths=write_jsonl(os.path.join(root, "pairs.jsonl"), arith_pairs(512, seed=1)),
                 eval_paths=write_jsonl(os.path.join(root, "pairs_eval.jsonl"), arith_pairs(64, seed=2)))
    common = {"tokenizer.path": tok, "data.seq_len": 32, "data.eval_fraction": 0.0,
              "data.train_paths": pairs["train_paths"], "data.eval_paths": pairs["eval_paths"],
              "train.eval_at_start": True, "train.log_every": 2}
    results, timings = {}, {}

    def run(job, name, workdir, overrides):
        t0 = time.time()
        summary = get_job(job)(configure(name, overrides), workdir)
        timings[workdir.rsplit("/", 1)[-1]] = round(time.time() - t0, 1)
        return summary

    rm_dir, dpo_dir = os.path.join(root, "reward"), os.path.join(root, "dpo")
    run("reward", "reward", rm_dir, {**common, "train.steps": n["reward_steps"],
                                     "train.eval_every": n["eval_every"]})
    results["reward"] = {"eval/accuracy": metric(rm_dir, "eval/accuracy")}
    run("dpo", "dpo", dpo_dir, {**common, "train.steps": n["dpo_steps"], "train.eval_every": n["eval_every"]})
    results["dpo"] = {k: metric(dpo_dir, k) for k in ("eval/rewards/accuracy", "eval/rewards/margin")}

    sft_dir = os.path.join(root, "sft")
    run("sft", "sft", sft_dir, {"tokenizer.path": tok, "data.format": "prompt_completion", "data.seq_len": 64,
                                "data.batch_size": 32, "data.train_paths": write_jsonl(
                                    os.path.join(root, "sft.jsonl"), arith_sft_rows(1024, seed=3)),
                                "optim.lr": 3e-3, "train.steps": n["sft_steps"], "train.eval_every": 0,
                                "train.export_hf": True})
    rl = {"model.hf_path": os.path.join(sft_dir, "hf_model"), "model.preset": "", "train.eval_at_start": True,
          "train.log_every": 1, "train.eval_every": n["rl_eval_every"], "train.checkpoint_every": 0,
          "optim.lr": 5e-4, "rl.kl_coef": 0.02, "rl.max_new_tokens": 8}
    grpo_dir, ppo_dir = os.path.join(root, "grpo"), os.path.join(root, "ppo")
    run("grpo", "grpo_code", grpo_dir, {**rl, "train.steps": n["grpo_steps"],
                                        "rl.prompts_per_step": n["grpo_prompts"], "rl.group_size": n["group_size"]})
    run("ppo", "ppo", ppo_dir, {**rl, "train.steps": n["ppo_steps"], "rl.prompts_per_step": n["ppo_prompts"],
                                "rl.epochs": n["ppo_epochs"], "rl.vf_coef": 0.5})
    for name, workdir in (("grpo", grpo_dir), ("ppo", ppo_dir)):
        results[name] = {k: metric(workdir, k) for k in ("eval/reward", "train/reward", "train/kl")}

    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))
    axes[0].plot(*zip(*results["reward"]["eval/accuracy"]), marker="o")
    axes[0].set(title="reward model: held-out accuracy", xlabel="step", ylim=(0, 1.02))
    axes[1].plot(*zip(*results["dpo"]["eval/rewards/accuracy"]), marker="o", label="accuracy")
    ax = axes[1].twinx()
    ax.plot(*zip(*results["dpo"]["eval/rewards/margin"]), color="C1", marker="s", label="margin")
    axes[1].set(title="DPO: held-out implicit-reward accuracy / margin", xlabel="step", ylim=(0, 1.02))
    ax.set_ylabel("margin", color="C1")
    for i, name in ((2, "grpo"), (3, "ppo")):
        axes[i].plot(*zip(*results[name]["eval/reward"]), marker="o", label="held-out greedy reward")
        axes[i].plot(*zip(*results[name]["train/reward"]), alpha=0.5, label="train reward (sampled)")
        kx = axes[i].twinx()
        kx.plot(*zip(*results[name]["train/kl"]), color="C3", alpha=0.6, label="KL to reference")
        kx.set_ylabel("KL", color="C3")
        axes[i].set(title=f"{name.upper()}: unit-test reward", xlabel="RL step", ylim=(0, 1.02))
        axes[i].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.join(args.out, "results"), exist_ok=True)
    png = os.path.join(args.out, "rl_learning_curves.png")
    fig.savefig(png, dpi=110)
    with open(os.path.join(args.out, "results", "rl_curves.json"), "w") as f:
        json.dump({"machine": machine(), "versions": versions(["jax", "flax", "optax"]), "seconds": timings,
                   "quick": args.quick, "curves": results}, f, indent=1)
    print(json.dumps({"png": png, "seconds": timings,
                      "final": {k: {m: v[-1][1] for m, v in r.items()} for k, r in results.items()},
                      "start": {k: {m: v[0][1] for m, v in r.items()} for k, r in results.items()}}, indent=1))


if __name__ == "__main__":
    main()
