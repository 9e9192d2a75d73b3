"""Learning evidence for tool use: agentic SFT, then GRPO with the `python` tool against GRPO without it.

    python experiments/tool_rl.py [--out experiments]
    python experiments/tool_rl.py --quick --out /tmp/tool_rl   # smoke run: a few steps of each job

The task (arith_tool, codejax/rl/environments.py): "What is 47 * 29?". A 2-layer model trained here
from scratch cannot multiply in its head, but it can write `print(47 * 29)`, call the python tool
(the sandbox) and copy the output. The runs:
1. agentic SFT on trajectories in which 30% of the tool problems are answered directly (a warm start
   that uses the tool too rarely; its direct answers are right but not learnable);
2. GRPO with rl.env='python' (multi-turn episodes, tool replies masked out of the loss);
3. the same GRPO budget without the tool (single-turn chat answers), from the same SFT model.
Both RL runs score `exact_answer` on held-out problems (a fixed 20% of the (a, op, b) triples), greedy.
Writes OUT/tool_rl_curves.png and OUT/results/tool_rl.json, with episodes/s and the step-time split.
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
from rl_curves import configure, metric, write_jsonl  # noqa: E402 - the same job runner as the other RL curves

FULL = dict(sft_rows=4096, sft_steps=800, rl_steps=30, prompts=8, group_size=8, eval_every=5, eval_prompts=64)
QUICK = dict(sft_rows=256, sft_steps=4, rl_steps=2, prompts=2, group_size=2, eval_every=1, eval_prompts=4)


def tokenizer(root, rows):
    """A BPE tokenizer trained on the task's rendered chats (the system turn's schema becomes a few tokens)."""
    from codejax.tokenizer import save_tokenizer, train_code_tokenizer
    boot = train_code_tokenizer(["x"], vocab_size=300, min_frequency=1)
    texts = [boot.apply_chat_template(r["messages"], tools=r["tools"], tokenize=False) for r in rows]
    path = os.path.join(root, "tokenizer")
    save_tokenizer(train_code_tokenizer(texts, vocab_size=1024, min_frequency=2), path)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="output folder; default experiments (with --quick: the temp dir)")
    parser.add_argument("--quick", action="store_true", help="smoke run: a few steps of each job")
    parser.add_argument("--sft-dir", default="", help="reuse the SFT stage of an earlier run: a folder holding "
                        "sft/hf_model and tokenizer/ (the RL runs take minutes, the SFT run most of the time)")
    args = parser.parse_args()
    if args.out is None:
        args.out = quick_out("tool_rl_quick") if args.quick else HERE
    root = tempfile.mkdtemp(prefix="tool_rl_")
    try:
        run_all(args, QUICK if args.quick else FULL, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run_all(args, n, root):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from codejax.jobs import get_job
    from codejax.rl.environments import arith_tool_chats, arith_tool_prompts

    sft_rows = arith_tool_chats(n["sft_rows"], seed=3, split="train", direct_fraction=0.3)
    timings = {}

    def run(job, name, workdir, overrides):
        t0 = time.time()
        summary = get_job(job)(configure(name, overrides), workdir)
        timings[os.path.basename(workdir)] = round(time.time() - t0, 1)
        return summary

    if args.sft_dir:
        tok, sft_dir = os.path.join(args.sft_dir, "tokenizer"), os.path.join(args.sft_dir, "sft")
    else:
        tok, sft_dir = tokenizer(root, sft_rows), os.path.join(root, "sft")
    if not args.sft_dir:
        run("sft", "sft_tools", sft_dir, {
            "tokenizer.path": tok, "data.train_paths": write_jsonl(os.path.join(root, "sft.jsonl"), sft_rows),
            "data.seq_len": 256, "data.batch_size": 32, "optim.lr": 3e-3, "optim.warmup_steps": 20,
            "train.steps": n["sft_steps"], "train.eval_every": 0, "train.export_hf": True})
    prompts = {"rl.prompts_path": write_jsonl(os.path.join(root, "train.jsonl"),
                                              arith_tool_prompts(2048, seed=4, split="train")),
               "rl.eval_prompts_path": write_jsonl(os.path.join(root, "eval.jsonl"),
                                                   arith_tool_prompts(n["eval_prompts"], seed=5, split="held_out"))}
    rl = {"model.hf_path": os.path.join(sft_dir, "hf_model"), "model.preset": "", "tokenizer.path": tok,
          **prompts, "train.steps": n["rl_steps"], "train.eval_at_start": True, "train.eval_every": n["eval_every"],
          "train.checkpoint_every": 0, "train.log_every": 1, "optim.lr": 2e-4, "rl.temperature": 0.6,
          "rl.prompts_per_step": n["prompts"],
          "rl.group_size": n["group_size"], "rl.minibatches": 1, "rl.max_new_tokens": 96, "rl.loss_agg": "dapo"}
    tools_dir, plain_dir = os.path.join(root, "grpo_tools"), os.path.join(root, "grpo_no_tools")
    run("grpo", "grpo_tools", tools_dir, {**rl, "rl.max_turns": 3, "rl.max_reply_tokens": 64})
    run("grpo", "grpo_tools", plain_dir, {**rl, "rl.env": "", "rl.chat": True, "rl.max_new_tokens": 32})
    keys = ("eval/reward", "train/reward", "train/tool_calls", "train/turns")
    results = {name: {k: metric(d, k) for k in keys} for name, d in (("tools", tools_dir), ("no_tools", plain_dir))}
    split = {k: [v for _, v in metric(tools_dir, f"train/time/{k}")]
             for k in ("generation_s", "tool_s", "reward_s", "score_s", "update_s", "step_s")}
    mean = {k: sum(v) / max(len(v), 1) for k, v in split.items()}
    episodes_per_s = n["prompts"] * n["group_size"] / max(mean["generation_s"] + mean["tool_s"], 1e-9)

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, label in (("tools", "GRPO with the python tool"), ("no_tools", "GRPO without tools")):
        axes[0].plot(*zip(*results[name]["eval/reward"]), marker="o", label=label)
    axes[0].set(title="held-out exact-answer reward (greedy)", xlabel="RL step", ylim=(-0.02, 1.02))
    axes[0].legend(fontsize=8)
    axes[1].plot(*zip(*results["tools"]["train/tool_calls"]), label="tool calls / episode")
    axes[1].plot(*zip(*results["tools"]["train/turns"]), label="turns / episode")
    axes[1].set(title="with tools: what the policy does", xlabel="RL step")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.join(args.out, "results"), exist_ok=True)
    png = os.path.join(args.out, "tool_rl_curves.png")
    fig.savefig(png, dpi=110)
    out = {"machine": machine(), "versions": versions(["jax", "flax", "optax"]), "seconds": timings,
           "quick": args.quick, "sft_dir": args.sft_dir, "sizes": n, "curves": results, "step_time_split_s": mean,
           "episodes_per_s": episodes_per_s}
    with open(os.path.join(args.out, "results", "tool_rl.json"), "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps({"png": png, "seconds": timings, "episodes_per_s": episodes_per_s, "step_time_split_s": mean,
                      "start": {k: {m: v[0][1] for m, v in r.items() if v} for k, r in results.items()},
                      "final": {k: {m: v[-1][1] for m, v in r.items() if v} for k, r in results.items()}}, indent=1))


if __name__ == "__main__":
    main()
