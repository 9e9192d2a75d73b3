"""DPO training throughput and peak memory on CPU: codejax vs transformers + TRL `DPOTrainer`, side by side.

    python experiments/bench_dpo_cpu.py --nice -10      # README run: both reference modes (~6 min on 2 cores)
    python experiments/bench_dpo_cpu.py --modes ref     # the frozen-copy reference only
    python experiments/bench_dpo_cpu.py --quick         # smoke run, about a minute

This is a benchmark, not a test: it asserts nothing about speed; it prints a Markdown table
and writes JSON (``--out``). Results and their context live in experiments/README.md.
It is built on experiments/bench_sft_cpu.py and reuses its set-up (stdlib rows, tokenizer,
random model), optimizer settings, summary and worker priority helpers.

What is compared, and why the comparison is fair
------------------------------------------------
* **One model, one set of weights, one tokenizer**: ``bench_sft_cpu.build_setup``. A random
  tiny Llama (5.05M params: hidden 256, 4 layers, 4 heads, 2 kv heads, intermediate 704,
  vocab 4096) is initialised by codejax and written with ``save_hf``; codejax reads it with
  ``load_hf``, TRL with ``AutoModelForCausalLM.from_pretrained`` (SDPA). fp32 on both sides;
  TRL's bf16 and gradient-checkpointing defaults are switched off.
* **One pair data set.** The Alpaca rows that ``build_setup`` mines from the stdlib
  (``mine_tree``) become preference pairs: prompt = codejax's ``ALPACA_PROMPT`` with the
  instruction (docstring) and the signature as input; chosen = the function's real body;
  rejected = the body of the function half the mined list away (row ``(i + n//2) % n``):
  a real, unrelated body of a different length, deterministic. Pairs whose prompt plus the
  longer completion plus EOS do not fit in ``seq_len`` tokens (under either tokenization,
  see below) are dropped, so neither side truncates anything; ``--max_pairs`` of the rest
  are drawn with a seeded RNG. By default that is (warmup + steps) x batch_size pairs: one
  epoch, so both sides train on every pair exactly once (in different orders: grain's
  shuffle vs torch's sampler), and the precomputed-reference mode runs the reference over
  just those pairs during set-up, on both sides. Both read the same
  ``{prompt, chosen, rejected}`` JSONL; both append EOS to each completion.
* **The same step.** ``batch_size`` pairs per optimizer step, chosen and rejected rows run
  as one forward pass of 2 x batch rows on both sides, sigmoid DPO loss, beta 0.1, no
  gradient accumulation, AdamW with ``bench_sft_cpu.optim_settings`` (lr constant,
  betas, eps, weight decay with norms excluded, clipping at 1.0) on both sides.
* **The reference** (``--modes``):
  ``ref``: a frozen copy of the initial weights, one extra no-grad forward per step
  (codejax ``preference.precompute_ref=False``: the job's ``ref`` collection; TRL
  ``ref_model=None``, which loads a second copy, ``precompute_ref_log_probs=False``);
  ``precomputed``: the reference log-probs computed once for every pair in set-up, in
  batches of ``batch_size`` (codejax ``preference.precompute_ref=True``; TRL
  ``precompute_ref_log_probs=True``); steps then run the policy only.
* **Padding.** codejax pads every pair row to ``seq_len`` (static shapes for ``jit``);
  TRL's collator pads each batch to its longest sequence. Throughput therefore counts
  **non-padding tokens** of chosen and rejected rows; *fill* is their share of the
  positions computed. (codejax's rows are shifted inputs, so it counts one token fewer
  per row than TRL, whose input_ids include the final EOS: < 1% of the figure.)
* **Tokenisation.** codejax tokenises prompt and completion separately; TRL tokenises
  prompt+completion together and starts the completion where the two token streams
  diverge (the prompt's final newline can merge with the body's indentation), so
  per-row counts can differ by a token.
* **Timing and memory.** As bench_sft_cpu: each framework in its own subprocess, one after
  the other, both using every core (``torch.set_num_threads(--threads)``; XLA's default
  pool). ``--warmup`` steps are excluded; the timed window is the wall time of the next
  ``--steps`` optimizer steps, batch fetching included; the first step (with codejax's
  jit compile) is reported on its own, and so is set-up (data pipeline, reference copy or
  precomputation, trainer init). The codejax loop is ``run_training``'s hot path (next
  batch, the job's jitted step, host-side token count) without checkpointing, logging or
  eval; its step is the job's ``dpo_loss_fn`` under ``make_train_step``, jitted here with
  the same donation so that XLA's ``memory_analysis()`` of the compiled step is in hand
  (bench_peft's ``xla_memory``: peak = arguments + temp + outputs - aliased). TRL runs
  ``trainer.train()`` with saving, eval and logging off. Memory for both: the worker
  process's peak RSS (``ru_maxrss``: libraries, weights, data, compiler for codejax) and
  its RSS after set-up, before the first step. Also the process CPU time (user + system, all
  threads) per timed step: on a machine shared with other jobs it moves less than the wall
  time does.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import subprocess
import sys
import tempfile
import time

from bench_peft import xla_memory  # experiments/bench_peft.py
from bench_sft_cpu import PACKAGES, QUICK, build_setup, optim_settings, set_priority, summarize
from benchinfo import machine, quick_out, versions  # experiments/benchinfo.py

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ("ref", "precomputed")
SIZE_FLAGS = ("steps", "warmup", "seq_len", "batch_size", "hidden", "layers", "heads", "kv_heads",
              "intermediate", "vocab", "max_files", "max_pairs")
MIB = 1 << 20


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=16, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before the window (>= 1)")
    p.add_argument("--seq_len", type=int, default=512, help="tokens per chosen/rejected row (TRL max_length)")
    p.add_argument("--batch_size", type=int, default=8, help="pairs per optimizer step")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv_heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=704)
    p.add_argument("--vocab", type=int, default=4096, help="tokenizer (and so model) vocabulary")
    p.add_argument("--max_files", type=int, default=100, help="stdlib files mined for rows")
    p.add_argument("--max_pairs", type=int, default=0,
                   help="pairs in the data set (the precomputed mode runs the reference over all of them); "
                        "0 = (warmup + steps) x batch_size: one epoch, every pair once on both sides")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--weight_decay", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--modes", default=",".join(MODES), help="comma list of ref, precomputed")
    p.add_argument("--frameworks", default="codejax,trl", help="comma list, run in this order")
    p.add_argument("--repeats", type=int, default=1,
                   help="run every (mode, framework) this many times, interleaved; the table shows each "
                        "one's fastest run, the JSON all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nice", type=int, default=0,
                   help="scheduling niceness of the worker processes, e.g. -10 on a shared machine (negative "
                        "values need root); 0 = leave it")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run")
    p.add_argument("--out", default=None,
                   help="JSON path; default experiments/results/bench_dpo_cpu.json (with --quick: the temp dir)")
    p.add_argument("--workdir", default="", help="keep set-up files here ('' = a temp dir)")
    # Internal: a worker subprocess runs one framework on the set-up in --setup_dir.
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="ref", help=argparse.SUPPRESS)
    p.add_argument("--setup_dir", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        explicit = {a.lstrip("-").split("=")[0] for a in (argv if argv is not None else sys.argv[1:])}
        for k, v in QUICK.items():
            if k not in explicit:
                setattr(args, k, v)
    if args.out is None:  # a smoke run never overwrites the committed results
        args.out = quick_out("bench_dpo_cpu_quick.json") if args.quick else os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "results", "bench_dpo_cpu.json")
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.warmup < 1:
        p.error("--warmup must be >= 1 (the first step, with compilation, is never timed)")
    args.max_pairs = args.max_pairs or (args.warmup + args.steps) * args.batch_size
    return args


# ----------------------------------------------------------------------------- set-up

def build_pairs(args, setup_dir: str) -> dict:
    """pairs.jsonl from the set-up's Alpaca rows (see the module docstring); returns its stats."""
    import numpy as np
    import transformers

    from codejax.data import ALPACA_PROMPT, ALPACA_PROMPT_NO_INPUT
    from codejax.data.formats import encode_texts

    with open(os.path.join(setup_dir, "alpaca.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    n = len(rows)
    pairs = []
    for i, r in enumerate(rows):
        rejected = rows[(i + n // 2) % n]["output"]
        if rejected == r["output"]:
            continue
        prompt = (ALPACA_PROMPT if r["input"] else ALPACA_PROMPT_NO_INPUT).format(
            instruction=r["instruction"], input=r["input"])
        pairs.append({"prompt": prompt, "chosen": r["output"], "rejected": rejected})

    tokenizer = transformers.AutoTokenizer.from_pretrained(os.path.join(setup_dir, "model"))
    eos = tokenizer.eos_token
    # codejax: prompt and completion apart, plus EOS; TRL: prompt + completion + EOS text in one go.
    prompt_len = np.array([len(x) for x in encode_texts(tokenizer, [p["prompt"] for p in pairs])])
    sides = {}
    for side in ("chosen", "rejected"):
        apart = prompt_len + np.array([len(x) for x in encode_texts(tokenizer, [p[side] for p in pairs])]) + 1
        joint = np.array([len(x) for x in encode_texts(tokenizer, [p["prompt"] + p[side] + eos for p in pairs])])
        sides[side] = np.maximum(apart, joint)
    fits = np.maximum(sides["chosen"], sides["rejected"]) <= args.seq_len
    kept = [i for i in range(len(pairs)) if fits[i]]
    chosen = sorted(random.Random(args.seed).sample(kept, min(args.max_pairs, len(kept))))
    with open(os.path.join(setup_dir, "pairs.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(pairs[i]) + "\n" for i in chosen)
    lengths = np.concatenate([sides["chosen"][chosen], sides["rejected"][chosen]])
    return {"candidate_pairs": len(pairs), "fitting_pairs": len(kept), "pairs": len(chosen),
            "row_tokens_mean": float(lengths.mean()), "row_tokens_median": float(np.median(lengths)),
            "row_tokens_max": int(lengths.max()), "rejected_rule": "body of mined row (i + n//2) % n"}


def rss_bytes() -> int:
    """This process's resident set size right now."""
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def peak_rss_bytes() -> int:
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (all its threads)."""
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ----------------------------------------------------------------------------- codejax

def dpo_config(args, setup_dir: str, mode: str):
    """configs/dpo.py's full fine-tuning config, set to this benchmark's sizes and optimizer."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("dpo_config", os.path.join(REPO, "configs", "dpo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    c = module.get_config("")
    c.model.update(hf_path=os.path.join(setup_dir, "model"), dtype="float32", param_dtype="float32",
                   remat_policy="none")
    c.data.update(train_paths=os.path.join(setup_dir, "pairs.jsonl"), seq_len=args.seq_len,
                  batch_size=args.batch_size, pack=False, eval_fraction=0.0, shuffle=True)
    o = optim_settings(args)
    c.optim.update(lr=o["lr"], schedule="constant", warmup_steps=0, b1=o["b1"], b2=o["b2"], eps=o["eps"],
                   weight_decay=o["weight_decay"], clip_norm=o["clip_norm"], grad_accum_steps=1)
    c.preference.update(loss_type="sigmoid", beta=args.beta, label_smoothing=0.0,
                        precompute_ref=mode == "precomputed")
    c.train.steps = args.warmup + args.steps
    c.seed = args.seed
    return c


def run_codejax(args, setup_dir: str, mode: str) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import transformers

    from codejax.data.pairs import pair_datasets_from_config
    from codejax.models import load_hf
    from codejax.objectives import dpo
    from codejax.objectives.variables import REF
    from codejax.train.loop import count_tokens
    from codejax.train.optim import make_optimizer
    from codejax.train.step import init_train_state, make_train_step

    config = dpo_config(args, setup_dir, mode)
    total = args.warmup + args.steps
    rss_start = rss_bytes()
    t0 = time.perf_counter()
    tokenizer = transformers.AutoTokenizer.from_pretrained(config.model.hf_path)
    model, params = load_hf(config.model.hf_path, dtype="float32", param_dtype="float32")
    # What codejax.jobs.preference.run_dpo does for full fine-tuning: a frozen `ref` copy of the
    # initial weights, or the reference log-probs of every pair computed once into the rows.
    extra, frozen = None, {}
    if config.preference.precompute_ref:
        extra = dpo.reference_columns(model, {"params": params}, config.data.seq_len,
                                      config.data.eval_batch_size or config.data.batch_size, tokenizer.pad_token_id)
    else:
        frozen = {REF: jax.jit(lambda p: jax.tree.map(jnp.copy, p))(params)}
    data = pair_datasets_from_config(config, tokenizer, shift=True, extra=extra)
    optimizer, schedule = make_optimizer(config.optim, total)
    state = init_train_state({"params": params}, optimizer, args.seed)  # the job's trainable collections
    del params
    # The job's step, jitted here (same donation as make_train_step's) to keep the compiled executable.
    step_fn = make_train_step(dpo.dpo_loss_fn(model, config.preference), optimizer, schedule, jit=False)
    it = iter(data.train)
    jax.block_until_ready((state, frozen))
    setup_s = time.perf_counter() - t0
    rss_setup = rss_bytes()

    losses, accuracy, tokens, positions, loss_tokens = [], [], [], [], []
    data_s, first_step_s, compile_s, window_start, cpu_start, compiled = 0.0, 0.0, 0.0, 0.0, 0.0, None
    for i in range(total):
        if i == args.warmup:
            jax.block_until_ready(state)
            window_start, cpu_start, data_s = time.perf_counter(), cpu_seconds(), 0.0
        step_start = time.perf_counter()
        batch = next(it)
        data_s += time.perf_counter() - step_start
        if compiled is None:
            c0 = time.perf_counter()
            compiled = jax.jit(step_fn, donate_argnums=0).lower(state, batch, frozen).compile()
            compile_s = time.perf_counter() - c0
        state, metrics = compiled(state, batch, frozen)
        # Host-side counts from the numpy batch, as run_training does: no device sync.
        tokens.append(count_tokens(batch))
        positions.append(int(batch["chosen_segment_ids"].size + batch["rejected_segment_ids"].size))
        loss_tokens.append(int(np.sum(batch["chosen_weights"]) + np.sum(batch["rejected_weights"])))
        losses.append(metrics["loss"])  # device scalars; read after the window
        accuracy.append(metrics["rewards/accuracy"])
        if i == 0:
            jax.block_until_ready(state)
            first_step_s = time.perf_counter() - step_start
    jax.block_until_ready(state)
    window_s = time.perf_counter() - window_start
    cpu_s = cpu_seconds() - cpu_start
    xla = xla_memory(compiled)
    return summarize("codejax", mode, args, window_s, tokens, positions, loss_tokens,
                     [float(x) for x in jax.device_get(losses)], first_step_s, setup_s,
                     breakdown={"data_fetch_s": data_s, "compile_s": compile_s},
                     extra={"jax": jax.__version__, "backend": jax.default_backend(),
                            "devices": len(jax.devices()), "data_stats": dict(data.stats),
                            "cpu_s_per_step": cpu_s / args.steps,
                            "final_accuracy": float(accuracy[-1]), "xla_memory": xla,
                            "memory": {"rss_start": rss_start, "rss_after_setup": rss_setup,
                                       "peak_rss": peak_rss_bytes()}})


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
    rss_start = rss_bytes()

    class StepTimer(transformers.TrainerCallback):
        """Wall-clock marks around every optimizer step, on the trainer's own events."""

        def __init__(self):
            self.train_begin, self.begin, self.end, self.cpu = 0.0, [], [], []

        def on_train_begin(self, *a, **k):
            self.train_begin = time.perf_counter()

        def on_step_begin(self, *a, **k):
            self.begin.append(time.perf_counter())

        def on_step_end(self, *a, **k):
            self.end.append(time.perf_counter())
            self.cpu.append(cpu_seconds())

    class CountingDPOTrainer(trl.DPOTrainer):
        """DPOTrainer that records each batch's tokens and loss (the training itself is untouched)."""

        record: dict = {"tokens": [], "positions": [], "loss_tokens": [], "losses": [], "accuracy": [],
                        "max_row": 0, "rss_first_step": 0}

        def training_step(self, model, inputs, num_items_in_batch=None):
            if not self.record["tokens"]:
                self.record["rss_first_step"] = rss_bytes()
            loss = super().training_step(model, inputs, num_items_in_batch)
            mask = inputs["attention_mask"]  # [2 x batch, longest row]: chosen rows, then rejected
            self.record["tokens"].append(int(mask.sum()))
            self.record["positions"].append(int(inputs["input_ids"].numel()))
            self.record["loss_tokens"].append(int(inputs["completion_mask"][..., 1:].sum()))
            self.record["losses"].append(float(loss))
            self.record["accuracy"].append(self._metrics["train"]["rewards/accuracies"][-1])
            self.record["max_row"] = max(self.record["max_row"], int(mask.sum(dim=1).max()))
            return loss

    t0 = time.perf_counter()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                              attn_implementation="sdpa")
    # A fresh datasets cache per run: TRL caches precomputed reference log-probs there, keyed by
    # data and model, and a second run must not find the first one's.
    cache_dir = tempfile.mkdtemp(prefix="hf_cache_", dir=setup_dir)
    train = datasets.Dataset.from_json(os.path.join(setup_dir, "pairs.jsonl"), cache_dir=cache_dir)
    out_dir = tempfile.mkdtemp(prefix="trl_out_", dir=setup_dir)
    config = trl.DPOConfig(
        output_dir=out_dir, max_steps=total, per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1, learning_rate=o["lr"], lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=o["weight_decay"], adam_beta1=o["b1"], adam_beta2=o["b2"],
        adam_epsilon=o["eps"], max_grad_norm=o["clip_norm"],
        bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True,
        max_length=args.seq_len, loss_type=["sigmoid"], beta=args.beta,
        precompute_ref_log_probs=mode == "precomputed", seed=args.seed,
        report_to="none", save_strategy="no", eval_strategy="no", logging_steps=10**6,
        disable_tqdm=True, dataloader_num_workers=0)
    timer = StepTimer()
    trainer = CountingDPOTrainer(model=model, ref_model=None, args=config, train_dataset=train,
                                 processing_class=tokenizer, callbacks=[timer])
    setup_s = time.perf_counter() - t0
    rss_setup = rss_bytes()
    trainer.train()

    rec = CountingDPOTrainer.record
    if rec["max_row"] > args.seq_len:
        raise RuntimeError(f"a TRL row has {rec['max_row']} tokens > max_length {args.seq_len}")
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
                            "ref_model": trainer.ref_model is not None, "pairs": len(trainer.train_dataset),
                            "max_row_tokens": rec["max_row"],
                            "cpu_s_per_step": (timer.cpu[total - 1] - timer.cpu[w - 1]) / args.steps,
                            "step_ms": [1e3 * (timer.end[i] - timer.begin[i]) for i in range(total)],
                            "final_accuracy": rec["accuracy"][-1],
                            "memory": {"rss_start": rss_start, "rss_after_setup": rss_setup,
                                       "rss_first_step": rec["rss_first_step"], "peak_rss": peak_rss_bytes()}})


# ----------------------------------------------------------------------------- report

def with_pairs(result: dict, args) -> dict:
    result["pairs_per_s"] = args.batch_size * args.steps / result["window_s"]
    return result


def markdown_table(results: list[dict]) -> str:
    lines = ["| framework | reference | pairs/s | tokens/s | ms/step | tokens/step (fill) | first step s "
             "| CPU s/step | set-up s | peak RSS MiB | XLA peak MiB | loss step 1 | final loss |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        xla = r.get("xla_memory") or {}
        xla_peak = f"{xla['peak_estimate'] / MIB:,.0f}" if "peak_estimate" in xla else "n/a"
        lines.append(
            f"| {r['framework']} | {r['mode']} | {r['pairs_per_s']:.2f} | {r['tokens_per_s']:,.0f} "
            f"| {r['ms_per_step']:,.0f} | {r['tokens_per_step']:,.0f} ({100 * r['fill']:.0f}%) "
            f"| {r['first_step_s']:.2f} | {r['cpu_s_per_step']:.2f} | {r['setup_s']:.1f} "
            f"| {r['memory']['peak_rss'] / MIB:,.0f} | {xla_peak} "
            f"| {r['first_loss']:.3f} | {r['final_loss']:.3f} |")
    return "\n".join(lines)


def speedups(results: list[dict]) -> dict:
    out = {}
    for mode in dict.fromkeys(r["mode"] for r in results):
        by = {r["framework"]: r for r in results if r["mode"] == mode}
        if "codejax" in by and "trl" in by:
            out[mode] = {"tokens_per_s": by["codejax"]["tokens_per_s"] / by["trl"]["tokens_per_s"],
                         "positions_per_s": (by["codejax"]["positions_per_step"] / by["codejax"]["ms_per_step"])
                         / (by["trl"]["positions_per_step"] / by["trl"]["ms_per_step"]),
                         "peak_rss": by["codejax"]["memory"]["peak_rss"] / by["trl"]["memory"]["peak_rss"]}
    return out


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
        result = with_pairs(json.load(f), args)
    result["process_s"] = time.perf_counter() - start
    result["loadavg_1min_before_after"] = [load_before, os.getloadavg()[0]]
    print(f"[bench]   {result['pairs_per_s']:.2f} pairs/s, {result['tokens_per_s']:,.0f} tokens/s, "
          f"{result['ms_per_step']:,.0f} ms/step, peak RSS {result['memory']['peak_rss'] / MIB:,.0f} MiB, "
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
    if set(modes) - set(MODES) or set(frameworks) - {"codejax", "trl"}:
        raise SystemExit(f"--modes takes {'/'.join(MODES)}, --frameworks codejax/trl; got {modes}, {frameworks}")
    info = {"date": datetime.date.today().isoformat(), "machine": machine(), "versions": versions(PACKAGES),
            "command": "python " + " ".join([os.path.relpath(__file__)] + sys.argv[1:]),
            "settings": {k: getattr(args, k) for k in SIZE_FLAGS + ("beta", "lr", "weight_decay", "threads",
                                                                 "seed", "repeats", "nice", "modes")},
            "optimizer": optim_settings(args)}
    start_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_dpo_cpu_") as tmp:
        setup_dir = args.workdir or tmp
        os.makedirs(setup_dir, exist_ok=True)
        start = time.perf_counter()
        info["setup"] = build_setup(args, setup_dir)
        info["setup"].update(build_pairs(args, setup_dir))
        info["setup"]["seconds"] = time.perf_counter() - start
        print(f"[bench] set-up: {info['setup']}", flush=True)
        runs = [run_worker(args, fw, mode, setup_dir)
                for mode in modes for _ in range(args.repeats) for fw in frameworks]
    info["total_s"] = time.perf_counter() - start_all

    results = []  # the fastest run of each (mode, framework)
    for mode in modes:
        for fw in frameworks:
            mine = [r for r in runs if r["mode"] == mode and r["framework"] == fw]
            results.append(max(mine, key=lambda r: r["tokens_per_s"]))
    info["results"] = results
    info["all_runs"] = runs
    info["speedup"] = speedups(results)
    table = markdown_table(results)
    print()
    print(table)
    print()
    for mode, s in info["speedup"].items():
        print(f"codejax/TRL ({mode}): {s['tokens_per_s']:.2f}x non-padding tokens/s, "
              f"{s['positions_per_s']:.2f}x positions/s, {s['peak_rss']:.2f}x peak RSS")
    for r in results:
        b = ", ".join(f"{k}={v:.2f}" for k, v in r["breakdown"].items())
        m = ", ".join(f"{k}={v / MIB:.0f} MiB" for k, v in r["memory"].items())
        print(f"{r['framework']} ({r['mode']}): {b}; {m} (timed window {r['window_s']:.1f} s)")
    print(f"total {info['total_s']:.0f} s")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
    print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
