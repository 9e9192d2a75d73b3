"""SFT training throughput on CPU: codejax vs transformers + TRL `SFTTrainer`, side by side.

    python experiments/bench_sft_cpu.py                 # packed only (~4 min on 2 cores)
    python experiments/bench_sft_cpu.py --modes packed,unpacked --nice -10   # README run, ~6 min
    python experiments/bench_sft_cpu.py --quick         # smoke run, under a minute
    python experiments/bench_sft_cpu.py --repeats 2     # interleaved repeats, fastest of each shown

This is a benchmark, not a test: it asserts nothing about speed; it prints a Markdown
table and writes JSON (``--out``). Results and their context live in experiments/README.md.

What is compared, and why the comparison is fair
------------------------------------------------
* **One model, one set of weights.** A random tiny Llama (hidden 256, 4 layers, 4 heads,
  2 kv heads, intermediate 704, vocab = the trained tokenizer, 4096) is initialised once by
  codejax and written with ``save_hf``. codejax reads it back with ``load_hf``; TRL gets
  ``AutoModelForCausalLM.from_pretrained`` (SDPA attention) of the same directory. fp32
  weights and compute on both sides; TRL's bf16 and activation-checkpointing defaults are
  switched off.
* **One data set, one tokenizer.** Alpaca rows mined from the stdlib (``mine_tree``), a
  byte-level BPE tokenizer trained on stdlib sources. codejax reads the rows as ``alpaca``;
  TRL gets the same rows as ``{"prompt", "completion"}`` with the prompt rendered by
  codejax's own ``ALPACA_PROMPT`` / ``ALPACA_PROMPT_NO_INPUT``, and
  ``completion_only_loss=True``. Both append eos to the completion and train on it.
* **The same step.** ``seq_len`` positions x ``batch_size`` rows per optimizer step, no
  gradient accumulation; AdamW with the same lr (constant schedule), betas, eps, weight
  decay (norms excluded on both sides) and global-norm clipping at 1.0.
* **Packing** (``--modes packed``, the default): codejax packs first-fit into
  ``batch_size`` rows of ``seq_len`` with segment-masked attention; TRL packs best-fit
  decreasing (``packing=True, packing_strategy="bfd"``) into rows of ``max_length=seq_len``,
  which forces its padding-free collator: the ``batch_size`` packed rows are concatenated
  into one ``[1, batch_size*seq_len]`` sequence and transformers' SDPA path turns the
  position ids into a block-diagonal causal mask. So both sides run ``batch_size*seq_len``
  positions per step and neither lets examples see each other; the packers differ in how
  full they fill the rows, which is why throughput counts **non-padding tokens**.
  ``--modes unpacked`` compares one example per row instead: codejax pads every row to
  ``seq_len`` (static shapes for jit), TRL pads each batch to its longest row.
* **Timing.** Each framework runs in its own subprocess (so XLA's and torch's thread pools
  never share the two cores, and neither process inherits the other's memory), one after
  the other. Both use every core: torch with ``torch.set_num_threads(--threads)``, XLA with
  its default intra-op pool (one thread per core). ``--warmup`` steps run first and are
  excluded; the timed window is the wall time of the next ``--steps`` optimizer steps,
  *including* fetching their batches. For codejax the window starts and ends with
  ``block_until_ready``, so asynchronous dispatch cannot hide work; the first step (jit
  compile included) is reported on its own. The codejax loop is the hot path of
  ``codejax.train.loop.run_training`` (next batch, jitted step, host-side token count)
  without its checkpointing, TensorBoard and eval, since those are not training
  throughput; TRL runs ``trainer.train()`` with saving, eval and logging turned off.
* **Reported:** non-padding input tokens per second, steps/s, ms/step, the first step's
  seconds, set-up seconds (data pipeline build / trainer init), the first and final training
  loss, plus a breakdown: time spent fetching batches, and for codejax the compute-only
  step time (one fixed batch, blocking every step). Data order differs (grain shuffle vs
  torch's sampler), so the losses are close at step 1 (same weights, different batches)
  and only roughly comparable later: a sanity check, not a quality comparison.
* **Shared machines.** ``--nice -10`` puts each worker in its own session at autogroup
  niceness -10 (needs root) so other jobs on the machine distort less; ``--repeats N``
  interleaves N runs of each and keeps the fastest. The 1-minute load average around
  every run is recorded in the JSON.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

from benchinfo import machine, quick_out, versions  # experiments/benchinfo.py

# Versions recorded with the results.
PACKAGES = ("jax", "jaxlib", "flax", "optax", "grain", "torch", "transformers", "trl", "accelerate", "datasets")

QUICK = dict(steps=3, warmup=1, seq_len=256, batch_size=2, hidden=64, layers=2, heads=4, kv_heads=2,
             intermediate=128, vocab=1024, max_files=20)
SIZE_FLAGS = ("steps", "warmup", "seq_len", "batch_size", "hidden", "layers", "heads", "kv_heads",
              "intermediate", "vocab", "max_files")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before the window (>= 1)")
    p.add_argument("--seq_len", type=int, default=512)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv_heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=704)
    p.add_argument("--vocab", type=int, default=4096, help="tokenizer (and so model) vocabulary")
    p.add_argument("--max_files", type=int, default=100, help="stdlib files mined for SFT rows")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--weight_decay", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--modes", default="packed", help="comma list of packed, unpacked")
    p.add_argument("--frameworks", default="codejax,trl", help="comma list, run in this order")
    p.add_argument("--repeats", type=int, default=1,
                   help="run every (mode, framework) this many times, interleaved; the table shows each "
                        "one's fastest run (less sensitive to other load on a shared machine), the JSON all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nice", type=int, default=0,
                   help="scheduling niceness of the worker processes, e.g. -10 on a machine shared with "
                        "other jobs (negative values need root); 0 = leave it")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run")
    p.add_argument("--out", default=None,
                   help="JSON path; default experiments/results/bench_sft_cpu.json (with --quick: the temp dir)")
    p.add_argument("--workdir", default="", help="keep set-up files here ('' = a temp dir)")
    # Internal: a worker subprocess runs one framework on the set-up in --setup_dir.
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="packed", help=argparse.SUPPRESS)
    p.add_argument("--setup_dir", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        explicit = {a.lstrip("-").split("=")[0] for a in (argv if argv is not None else sys.argv[1:])}
        for k, v in QUICK.items():
            if k not in explicit:
                setattr(args, k, v)
    if args.out is None:  # a smoke run never overwrites the committed results
        args.out = quick_out("bench_sft_cpu_quick.json") if args.quick else os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "results", "bench_sft_cpu.json")
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.warmup < 1:
        p.error("--warmup must be >= 1 (the first step, with compilation, is never timed)")
    return args


# ----------------------------------------------------------------------------- set-up

def build_setup(args, setup_dir: str) -> dict:
    """Mine rows, train the tokenizer and write one random model; both workers read these."""
    import jax

    from codejax.codedata import mine_tree
    from codejax.data import ALPACA_PROMPT, ALPACA_PROMPT_NO_INPUT
    from codejax.models import family_config, init_params, save_hf
    from codejax.tokenizer import iter_stdlib_sources, train_code_tokenizer

    rows, stats = mine_tree(max_files=args.max_files)
    alpaca = [{k: r[k] for k in ("instruction", "input", "output")} for r in rows]
    # TRL's prompt-completion rows: the prompt is exactly what codejax's alpaca format renders.
    prompt_completion = [
        {"prompt": (ALPACA_PROMPT if r["input"] else ALPACA_PROMPT_NO_INPUT).format(
            instruction=r["instruction"], input=r["input"]), "completion": r["output"]}
        for r in alpaca]
    for name, data in (("alpaca.jsonl", alpaca), ("prompt_completion.jsonl", prompt_completion)):
        with open(os.path.join(setup_dir, name), "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in data)

    tokenizer = train_code_tokenizer(iter_stdlib_sources(max_files=max(args.max_files, 100)),
                                     vocab_size=args.vocab)
    cfg = family_config(
        "llama", vocab_size=len(tokenizer), hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_layers=args.layers, num_heads=args.heads, num_kv_heads=args.kv_heads,
        max_position_embeddings=max(2048, args.seq_len),
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id)
    params = init_params(cfg, jax.random.PRNGKey(args.seed))
    save_hf(os.path.join(setup_dir, "model"), cfg, params, tokenizer=tokenizer)
    n_params = sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
    return {"rows": len(alpaca), "files_mined": stats.files_read, "vocab_size": len(tokenizer),
            "params": n_params}


def optim_settings(args) -> dict:
    # codejax's base optimizer defaults (configs' AdamW), shared by both frameworks.
    return dict(lr=args.lr, b1=0.9, b2=0.95, eps=1e-8, weight_decay=args.weight_decay, clip_norm=1.0)


# ----------------------------------------------------------------------------- codejax

def run_codejax(args, setup_dir: str, mode: str) -> dict:
    import jax
    import numpy as np
    import transformers

    from codejax.config import base_config
    from codejax.data import build_datasets
    from codejax.models import load_hf
    from codejax.objectives.lm import lm_loss_fn
    from codejax.train.optim import make_optimizer
    from codejax.train.step import init_train_state, make_train_step

    model_dir = os.path.join(setup_dir, "model")
    total = args.warmup + args.steps
    t0 = time.perf_counter()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model, params = load_hf(model_dir, dtype="float32", param_dtype="float32")
    data = build_datasets(tokenizer=tokenizer, train_paths=[os.path.join(setup_dir, "alpaca.jsonl")],
                          fmt="alpaca", seq_len=args.seq_len, batch_size=args.batch_size, seed=args.seed,
                          pack=mode == "packed")
    o = optim_settings(args)
    optim_cfg = base_config().optim
    optim_cfg.update(lr=o["lr"], schedule="constant", warmup_steps=0, b1=o["b1"], b2=o["b2"], eps=o["eps"],
                     weight_decay=o["weight_decay"], clip_norm=o["clip_norm"], grad_accum_steps=1)
    optimizer, schedule = make_optimizer(optim_cfg, total)
    # Full fine-tuning: the trainable variables are the Flax dict {"params": weights}.
    state = init_train_state({"params": params}, optimizer, args.seed)
    train_step = make_train_step(lm_loss_fn(model), optimizer, schedule)
    it = iter(data.train)
    setup_s = time.perf_counter() - t0

    losses, tokens, positions, loss_tokens = [], [], [], []
    data_s, first_step_s, window_start = 0.0, 0.0, 0.0
    for i in range(total):
        if i == args.warmup:
            jax.block_until_ready(state)
            window_start, data_s = time.perf_counter(), 0.0
        step_start = time.perf_counter()
        batch = next(it)
        data_s += time.perf_counter() - step_start
        state, metrics = train_step(state, batch)
        # Host-side count from the numpy batch, as run_training does: no device sync.
        tokens.append(int(np.sum(batch["segment_ids"] > 0)))
        positions.append(int(batch["segment_ids"].size))
        loss_tokens.append(int(np.sum(batch["weights"])))
        losses.append(metrics["loss"])  # a device scalar; read after the window
        if i == 0:
            jax.block_until_ready(state)
            first_step_s = time.perf_counter() - step_start
    jax.block_until_ready(state)
    window_s = time.perf_counter() - window_start

    # Breakdown: the jitted step alone, on one batch already in host memory, blocking each time.
    batch = next(it)
    compute = []
    for _ in range(min(5, args.steps)):
        s = time.perf_counter()
        state, metrics = train_step(state, batch)
        jax.block_until_ready(state)
        compute.append(time.perf_counter() - s)
    return summarize("codejax", mode, args, window_s, tokens, positions, loss_tokens,
                     [float(x) for x in jax.device_get(losses)], first_step_s, setup_s,
                     breakdown={"data_fetch_s": data_s,
                                "compute_only_ms_per_step": 1e3 * float(np.median(compute))},
                     extra={"jax": jax.__version__, "backend": jax.default_backend(),
                            "devices": len(jax.devices())})


# ----------------------------------------------------------------------------- TRL

def run_trl(args, setup_dir: str, mode: str) -> dict:
    import datasets
    import torch
    import transformers
    import trl

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model_dir = os.path.join(setup_dir, "model")
    total = args.warmup + args.steps
    o = optim_settings(args)

    class StepTimer(transformers.TrainerCallback):
        """Wall-clock marks around every optimizer step, on the trainer's own events."""

        def __init__(self):
            self.train_begin, self.begin, self.end = 0.0, [], []

        def on_train_begin(self, *a, **k):
            self.train_begin = time.perf_counter()

        def on_step_begin(self, *a, **k):
            self.begin.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            self.end.append(time.perf_counter())

    class CountingSFTTrainer(trl.SFTTrainer):
        """SFTTrainer that records each batch's tokens and loss (the training itself is untouched)."""

        record: dict = {"tokens": [], "positions": [], "loss_tokens": [], "losses": []}

        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            ids = inputs["input_ids"]
            mask = inputs.get("attention_mask")
            # Padding-free batches carry no mask and no padding (pad_to_multiple_of is None).
            self.record["tokens"].append(int(mask.sum()) if mask is not None else int(ids.numel()))
            self.record["positions"].append(int(ids.numel()))
            labels = inputs["labels"]
            self.record["loss_tokens"].append(int((labels[..., 1:] != -100).sum()))
            self.record["losses"].append(float(loss))
            return loss

    t0 = time.perf_counter()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                              attn_implementation="sdpa")
    train = datasets.Dataset.from_json(os.path.join(setup_dir, "prompt_completion.jsonl"))
    out_dir = tempfile.mkdtemp(prefix="trl_out_", dir=setup_dir)
    config = trl.SFTConfig(
        output_dir=out_dir, max_steps=total, per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1, learning_rate=o["lr"], lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=o["weight_decay"], adam_beta1=o["b1"], adam_beta2=o["b2"],
        adam_epsilon=o["eps"], max_grad_norm=o["clip_norm"],
        bf16=False, fp16=False, activation_checkpointing=False, use_cpu=True,
        max_length=args.seq_len, packing=mode == "packed", packing_strategy="bfd",
        completion_only_loss=True, seed=args.seed,
        report_to="none", save_strategy="no", eval_strategy="no", logging_steps=10**6,
        disable_tqdm=True, dataloader_num_workers=0)
    timer = StepTimer()
    trainer = CountingSFTTrainer(model=model, args=config, train_dataset=train, processing_class=tokenizer,
                                 callbacks=[timer])
    setup_s = time.perf_counter() - t0
    trainer.train()

    rec = CountingSFTTrainer.record
    w = args.warmup
    window_s = timer.end[total - 1] - timer.end[w - 1]
    # Between one step's end and the next one's begin the trainer logs and fetches the batch.
    gaps = sum(timer.begin[i] - timer.end[i - 1] for i in range(w, total))
    first_step_s = timer.end[0] - timer.train_begin  # like codejax's: batch fetch included
    return summarize("trl", mode, args, window_s, rec["tokens"], rec["positions"], rec["loss_tokens"],
                     rec["losses"], first_step_s, setup_s,
                     breakdown={"data_fetch_s": gaps,
                                "in_step_ms_per_step": 1e3 * sum(timer.end[i] - timer.begin[i]
                                                                 for i in range(w, total)) / args.steps},
                     extra={"torch": torch.__version__, "trl": trl.__version__,
                            "torch_threads": torch.get_num_threads(), "optim": str(config.optim.value),
                            "padding_free": bool(trainer.padding_free)})


# ----------------------------------------------------------------------------- report

def summarize(framework, mode, args, window_s, tokens, positions, loss_tokens, losses, first_step_s,
              setup_s, breakdown, extra) -> dict:
    w, n = args.warmup, args.steps
    if len(tokens) != w + n:
        raise RuntimeError(f"{framework}: ran {len(tokens)} steps, expected {w + n}")
    timed_tokens, timed_positions = sum(tokens[w:]), sum(positions[w:])
    return {
        "framework": framework, "mode": mode,
        "tokens_per_s": timed_tokens / window_s, "steps_per_s": n / window_s, "ms_per_step": 1e3 * window_s / n,
        "tokens_per_step": timed_tokens / n, "positions_per_step": timed_positions / n,
        "loss_tokens_per_step": sum(loss_tokens[w:]) / n, "fill": timed_tokens / timed_positions,
        "first_step_s": first_step_s, "setup_s": setup_s, "window_s": window_s,
        "first_loss": losses[0], "final_loss": losses[-1],
        "final_loss_mean_last5": sum(losses[-5:]) / len(losses[-5:]),
        "breakdown": breakdown, **extra,
    }


def markdown_table(results: list[dict]) -> str:
    lines = ["| framework | mode | tokens/s | steps/s | ms/step | tokens/step (fill) | first step s "
             "| set-up s | loss step 1 | final loss |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(
            f"| {r['framework']} | {r['mode']} | {r['tokens_per_s']:,.0f} | {r['steps_per_s']:.3f} "
            f"| {r['ms_per_step']:,.0f} | {r['tokens_per_step']:,.0f} ({100 * r['fill']:.0f}%) "
            f"| {r['first_step_s']:.2f} | {r['setup_s']:.1f} | {r['first_loss']:.3f} | {r['final_loss']:.3f} |")
    return "\n".join(lines)


def speedups(results: list[dict]) -> dict:
    out = {}
    for mode in dict.fromkeys(r["mode"] for r in results):
        by = {r["framework"]: r for r in results if r["mode"] == mode}
        if "codejax" in by and "trl" in by:
            out[mode] = by["codejax"]["tokens_per_s"] / by["trl"]["tokens_per_s"]
    return out


def set_priority(nice: int) -> str:
    """Give this process (a worker, alone in its own session) the niceness ``nice``.

    Linux schedules by autogroup (one per session) first, so a plain os.nice() would only
    rank the worker against its own session; the autogroup's niceness is what competes
    with other jobs on the machine.
    """
    try:
        with open("/proc/self/autogroup", "w", encoding="utf-8") as f:
            f.write(str(nice))
        return f"autogroup nice {nice}"
    except OSError:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
            return f"process nice {nice}"
        except OSError as e:
            print(f"[bench] could not set niceness {nice}: {e}", file=sys.stderr)
            return "unchanged"


def run_worker(args, framework: str, mode: str, setup_dir: str) -> dict:
    result_path = os.path.join(setup_dir, f"result_{framework}_{mode}.json")
    cmd = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--worker", framework, "--mode", mode,
           "--setup_dir", setup_dir]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", JAX_PLATFORMS="cpu")
    print(f"[bench] running {framework} ({mode}) ...", flush=True)
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    # A session of its own: --nice then changes only this worker's scheduling group.
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, start_new_session=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-5000:] + proc.stderr[-10000:])
        raise RuntimeError(f"{framework} ({mode}) worker failed with exit code {proc.returncode}")
    with open(result_path, encoding="utf-8") as f:
        result = json.load(f)
    result["process_s"] = time.perf_counter() - start
    # 1-minute load average around the run: other processes on the machine skew the timing.
    result["loadavg_1min_before_after"] = [load_before, os.getloadavg()[0]]
    print(f"[bench]   {result['tokens_per_s']:,.0f} tokens/s, {result['ms_per_step']:,.0f} ms/step, "
          f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}", flush=True)
    return result


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        priority = set_priority(args.nice) if args.nice else "unchanged"
        fn = {"codejax": run_codejax, "trl": run_trl}[args.worker]
        result = fn(args, args.setup_dir, args.mode)
        result["priority"] = priority
        with open(os.path.join(args.setup_dir, f"result_{args.worker}_{args.mode}.json"), "w",
                  encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        return

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    if set(modes) - {"packed", "unpacked"} or set(frameworks) - {"codejax", "trl"}:
        raise SystemExit(f"--modes takes packed/unpacked, --frameworks codejax/trl; got {modes}, {frameworks}")
    info = {"date": datetime.date.today().isoformat(), "machine": machine(), "versions": versions(PACKAGES),
            "command": "python " + " ".join([os.path.relpath(__file__)] + sys.argv[1:]),
            "settings": {k: getattr(args, k) for k in SIZE_FLAGS + ("lr", "weight_decay", "threads", "seed",
                                                                 "repeats", "nice", "modes")},
            "optimizer": optim_settings(args)}
    with tempfile.TemporaryDirectory(prefix="bench_sft_cpu_") as tmp:
        setup_dir = args.workdir or tmp
        os.makedirs(setup_dir, exist_ok=True)
        start = time.perf_counter()
        info["setup"] = build_setup(args, setup_dir)
        info["setup"]["seconds"] = time.perf_counter() - start
        print(f"[bench] set-up: {info['setup']}", flush=True)
        runs = [run_worker(args, fw, mode, setup_dir)
                for mode in modes for _ in range(args.repeats) for fw in frameworks]

    results = []  # the fastest run of each (mode, framework)
    for mode in modes:
        for fw in frameworks:
            mine = [r for r in runs if r["mode"] == mode and r["framework"] == fw]
            results.append(max(mine, key=lambda r: r["tokens_per_s"]))
    info["results"] = results
    info["all_runs"] = runs
    info["speedup_tokens_per_s"] = speedups(results)
    table = markdown_table(results)
    print()
    print(table)
    print()
    for mode, ratio in info["speedup_tokens_per_s"].items():
        print(f"speedup codejax/TRL ({mode}, non-padding tokens/s): {ratio:.2f}x")
    for r in results:
        b = ", ".join(f"{k}={v:.2f}" for k, v in r["breakdown"].items())
        print(f"breakdown {r['framework']} ({r['mode']}): {b} (timed window {r['window_s']:.1f} s)")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
    print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
