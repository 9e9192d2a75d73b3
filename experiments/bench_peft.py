"""PEFT methods side by side: trainable parameters, memory and training tokens/s.

    python experiments/bench_peft.py                        # CPU: a 5.05M-param Llama, 8 x 256 (~6 min on 2 cores)
    python experiments/bench_peft.py --nice -10             # the same on a shared machine (needs root)
    python experiments/bench_peft.py --quick                # smoke run: tiny model, 2 timed steps (~1-2 min)
    python experiments/bench_peft.py --preset llama-1b      # GPU: ~1.1B Llama, 8 x 2048, bf16 compute, remat full
    python experiments/bench_peft.py --methods full,lora,qlora --steps 20
    python experiments/bench_peft.py --preset llama-1b --frozen_dtype bfloat16   # LoRA-style bf16 base

This is a benchmark, not a test: it asserts nothing about speed. It prints a Markdown
table and writes JSON to ``experiments/results/bench_peft_<backend>.json`` (``--out``).
Results and their context live in experiments/README.md.

What is compared
----------------
One model shape and one set of random base weights (seed 0), one synthetic data set
(a fixed random bigram chain: every token has 4 possible successors, so the loss can
fall from ln(vocab) towards ln 4), one optimizer (codejax's AdamW: clipping at 1.0,
weight decay 0.1 with norms/scales excluded, constant learning rate), and one step
(``codejax.train.step.make_train_step``). Per method:

* ``full``: ``Transformer(cfg)``, every weight trained; trainable = {"params": base}.
* ``lora`` / ``dora``: rank ``--rank`` on ``--targets`` (default all-linear, as in QLoRA).
* ``qlora``: as lora, with every layer projection's kernel stored as NF4 (``quantize_base``).
* ``prefix`` / ``prompt``: ``--virtual_tokens`` learned key/value prefixes per layer, or
  soft-prompt embeddings. Prompt tuning lengthens every row by that many positions;
  tokens/s counts the real tokens only.
* ``adapter``: Houlsby bottleneck adapters of ``--adapter_size`` after attention and MLP.
* ``ia3``: (IA)3 scales on k, v and the feed-forward input of down_proj.

Measured per method, each in a fresh subprocess (so device peaks and compile caches never
mix, and a crash or OOM loses one row only):

* **trainable params**: leaves of the trainable tree, and their share of the dense base.
* **memory**: bytes of the frozen base (what is not trained: the whole model for PEFT,
  nothing for full fine-tuning) and of the train state (trainable params + AdamW's two
  moments). XLA's memory analysis of the compiled step gives argument, output, alias
  (donated) and temp bytes; "XLA peak" = arguments + temp + outputs - aliased, an
  estimate of the step's live bytes on any backend. On a GPU, the allocator's
  ``peak_bytes_in_use`` is reported too; the weights are built and quantised on the
  host's CPU first, so that peak is the training's, not the fp32 base's before
  quantisation. (On CPU ``memory_stats`` is unavailable; the process's max RSS is in
  the JSON but includes the compiler's own memory.)
* **speed**: compile time; then ``--warmup`` untimed steps and ``--steps`` timed ones,
  each ended by ``block_until_ready`` on the new state; ms/step is the median and
  tokens/s = batch x seq / median. Data is already on the device (a pool of 4 batches).
  ``--repeats N`` runs the whole method list N times, interleaved, and the table keeps
  each method's fastest run (other load on a shared machine drifts over minutes; the JSON
  keeps every run and the 1-minute load average around it). ``--nice -10`` runs each
  worker in its own session at autogroup niceness -10 (needs root).
* **loss**: the first and the final step's training loss, a sanity check (finite, falling).
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

PACKAGES = ("jax", "jaxlib", "flax", "optax")  # versions recorded with the results

ALL_METHODS = ("full", "lora", "qlora", "prefix", "prompt", "dora", "ia3", "adapter")
# Learning rates per method: prefix/prompt tuning needs far larger steps than weights do.
DEFAULT_LR = {"full": 3e-4, "prefix": 1e-2, "prompt": 1e-2}
PEFT_LR = 1e-3
QUICK = dict(preset="tiny", batch=2, seq=64, steps=2, warmup=1, repeats=1)
NUM_BATCHES = 4
MB = 1 << 20


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=",".join(ALL_METHODS), help=f"comma list of {', '.join(ALL_METHODS)}")
    p.add_argument("--preset", default="",
                   help="'small' (4 layers, hidden 256, vocab 4096), 'tiny', or a codejax.models.PRESETS name "
                        "such as llama-1b; default: small on CPU, llama-1b on accelerators")
    p.add_argument("--batch", type=int, default=8, help="rows per step")
    p.add_argument("--seq", type=int, default=0, help="tokens per row; default 256 on CPU, 2048 on accelerators")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
    p.add_argument("--dtype", default="", help="compute dtype; default float32 on CPU, bfloat16 on accelerators")
    p.add_argument("--remat", default="full", help="remat policy of the scanned layers")
    p.add_argument("--frozen_dtype", default="",
                   help="store the frozen base of the PEFT methods in this dtype (e.g. bfloat16); "
                        "'' = the param dtype, float32. NF4 fields are never cast.")
    p.add_argument("--rank", type=int, default=16, help="LoRA/QLoRA/DoRA rank")
    p.add_argument("--alpha", type=float, default=32.0)
    p.add_argument("--targets", default="all-linear", help="LoRA/QLoRA/DoRA target modules, comma list")
    p.add_argument("--virtual_tokens", type=int, default=20, help="prefix and prompt tuning length")
    p.add_argument("--adapter_size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.0, help="0 = per method: 3e-4 full, 1e-2 prefix/prompt, else 1e-3")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny model and 2 timed steps: a smoke run")
    p.add_argument("--out", default="", help="JSON path; default experiments/results/bench_peft_<backend>.json "
                                             "(with --quick: the temp dir)")
    p.add_argument("--repeats", type=int, default=2,
                   help="run the method list this many times, interleaved; the table shows each method's fastest")
    p.add_argument("--nice", type=int, default=0,
                   help="autogroup niceness of the workers, e.g. -10 on a shared machine (root); 0 = leave it")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per method subprocess")
    # Internal: a worker subprocess measures one method and writes its result here.
    p.add_argument("--method", default="", help=argparse.SUPPRESS)
    p.add_argument("--result", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        explicit = {a.lstrip("-").split("=")[0] for a in (argv if argv is not None else sys.argv[1:])}
        for k, v in QUICK.items():
            if k not in explicit:
                setattr(args, k, v)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or set(methods) - set(ALL_METHODS):
        p.error(f"--methods takes a comma list of {ALL_METHODS}; got {args.methods!r}")
    args.method_list = methods
    if args.steps < 1 or args.warmup < 0 or args.repeats < 1:
        p.error("--steps and --repeats must be >= 1, --warmup >= 0")
    return args


# ----------------------------------------------------------------------------- worker (one method)

def resolve(args, on_cpu: bool) -> dict:
    """Backend-dependent defaults, settled in the worker (the driver never starts a backend)."""
    return {"preset": args.preset or ("small" if on_cpu else "llama-1b"),
            "seq": args.seq or (256 if on_cpu else 2048),
            "dtype": args.dtype or ("float32" if on_cpu else "bfloat16"),  # CPUs emulate bf16 matmuls slowly
            "remat": args.remat}


def model_config(preset: str, dtype: str, remat: str):
    from codejax.models import family_config, preset_config, tiny_config
    switches = dict(dtype=dtype, param_dtype="float32", remat_policy=remat, scan_layers=True)
    if preset == "tiny":
        return tiny_config("llama", **switches)
    if preset == "small":  # the CPU model of bench_mfu.py and bench_sft_cpu.py
        return family_config("llama", vocab_size=4096, hidden_size=256, intermediate_size=704, num_layers=4,
                             num_heads=4, num_kv_heads=2, max_position_embeddings=4096, **switches)
    return preset_config(preset, **switches)


def peft_spec(args, method: str):
    from codejax.peft import PeftSpec
    from codejax.models.adapters import split_names
    return PeftSpec(method, rank=args.rank, alpha=args.alpha, target_modules=split_names(args.targets),
                    num_virtual_tokens=args.virtual_tokens, adapter_size=args.adapter_size)


def tree_bytes(tree) -> int:
    import jax
    return sum(int(x.size) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))


def cast_frozen(base, dtype: str):
    """Floating leaves of the frozen base to `dtype`; NF4 fields (kernel_codes, kernel_absmax...) stay."""
    import jax
    import jax.numpy as jnp

    def cast(path, x):
        name = str(getattr(path[-1], "key", ""))
        if name.startswith("kernel_") or not jnp.issubdtype(x.dtype, jnp.floating):
            return x
        return x.astype(dtype)
    return jax.tree_util.tree_map_with_path(cast, base)


def build_variables(args, cfg, method: str):
    """(model, trainable, frozen, base_param_count), built on the host CPU.

    Building on the CPU keeps the fp32 base that QLoRA quantises (and the adapters'
    init pass) out of an accelerator's peak memory; the caller moves the trees over.
    """
    import jax

    from codejax.models import Transformer, init_params
    from codejax.peft import count_params, init_adapters, quantize_base

    with jax.default_device(jax.devices("cpu")[0]):
        base = jax.jit(init_params, static_argnums=0)(cfg, jax.random.PRNGKey(args.seed))
        base_count = count_params(base)
        if method == "full":
            return Transformer(cfg), {"params": base}, {}, base_count
        model = Transformer(cfg, peft=peft_spec(args, method))
        frozen = jax.jit(quantize_base)(base) if method == "qlora" else base
        if args.frozen_dtype:
            frozen = cast_frozen(frozen, args.frozen_dtype)
        adapters = init_adapters(model, frozen, jax.random.PRNGKey(args.seed + 1))
        return model, adapters, {"params": frozen}, base_count


def bigram_batches(vocab: int, batch: int, seq: int, seed: int) -> list[dict]:
    """NUM_BATCHES batches walked from one random bigram table (4 successors per token)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    successors = rng.integers(0, vocab, (vocab, 4))
    out = []
    for _ in range(NUM_BATCHES):
        tokens = np.empty((batch, seq + 1), np.int32)
        tokens[:, 0] = rng.integers(0, vocab, batch)
        choice = rng.integers(0, 4, (batch, seq))
        for t in range(seq):
            tokens[:, t + 1] = successors[tokens[:, t], choice[:, t]]
        out.append({"inputs": tokens[:, :-1], "targets": tokens[:, 1:],
                    "weights": np.ones((batch, seq), np.float32), "segment_ids": np.ones((batch, seq), np.int32),
                    "positions": np.tile(np.arange(seq, dtype=np.int32), (batch, 1))})
    return out


def optimizer_for(lr: float):
    import ml_collections

    from codejax.config import base_config
    from codejax.train.optim import make_optimizer
    optim = ml_collections.ConfigDict(base_config().optim.to_dict())
    optim.lr, optim.schedule, optim.warmup_steps = lr, "constant", 0
    return make_optimizer(optim, total_steps=1000)


def xla_memory(compiled) -> dict:
    m = compiled.memory_analysis()
    if m is None:
        return {}
    out = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("argument", "output", "alias", "temp",
                                                              "generated_code")}
    out["peak_estimate"] = out["argument"] + out["temp"] + out["output"] - out["alias"]
    return out


def device_memory(device) -> dict:
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - some backends raise instead of returning None
        stats = None
    if not stats:
        return {}
    return {k: int(stats[k]) for k in ("peak_bytes_in_use", "bytes_in_use", "bytes_limit") if k in stats}


def run_method(args, method: str) -> dict:
    import resource

    import jax
    import numpy as np

    from codejax.objectives.lm import lm_loss_fn
    from codejax.peft import count_params
    from codejax.train.step import init_train_state, make_train_step

    device = jax.devices()[0]
    settings = resolve(args, device.platform == "cpu")
    cfg = model_config(settings["preset"], settings["dtype"], settings["remat"])
    batch_size, seq = args.batch, settings["seq"]

    t0 = time.perf_counter()
    model, trainable, frozen, base_count = build_variables(args, cfg, method)
    trainable, frozen = jax.device_put((trainable, frozen), device)
    lr = args.lr or DEFAULT_LR.get(method, PEFT_LR)
    optimizer, schedule = optimizer_for(lr)
    with jax.default_device(device):  # eager: the state's params are the buffers just moved, not a copy
        state = init_train_state(trainable, optimizer, args.seed)
    del trainable
    batches = jax.device_put(bigram_batches(cfg.vocab_size, batch_size, seq, args.seed), device)
    jax.block_until_ready((state, frozen, batches))
    setup_s = time.perf_counter() - t0

    # Our own jit of the unjitted step (same donation as make_train_step's), so that the compiled
    # executable, and with it XLA's memory analysis, is in hand; it is also what the loop calls.
    step_fn = make_train_step(lm_loss_fn(model), optimizer, schedule, jit=False)
    t0 = time.perf_counter()
    compiled = jax.jit(step_fn, donate_argnums=0).lower(state, batches[0], frozen).compile()
    compile_s = time.perf_counter() - t0
    trainable_count = count_params(state["params"])
    state_bytes = tree_bytes(state["params"]) + tree_bytes(state["opt_state"])
    frozen_bytes = tree_bytes(frozen)

    losses, times = [], []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        state, metrics = compiled(state, batches[i % NUM_BATCHES], frozen)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - t0)
        losses.append(float(metrics["loss"]))
    timed = times[args.warmup:]
    median_s = float(np.median(timed))
    tokens = batch_size * seq
    return {
        "method": method, "lr": lr,
        "settings": {**settings, "batch": batch_size, "frozen_dtype": args.frozen_dtype or cfg.param_dtype},
        "device": device.device_kind, "platform": device.platform, "devices": jax.device_count(),
        "jax": jax.__version__,
        "config": {k: getattr(cfg, k) for k in ("family", "vocab_size", "hidden_size", "intermediate_size",
                                                "num_layers", "num_heads", "num_kv_heads", "head_dim",
                                                "tie_embeddings", "dtype", "param_dtype", "remat_policy")},
        "peft": None if model.peft is None else {k: getattr(model.peft, k) for k in (
            "rank", "alpha", "target_modules", "num_virtual_tokens", "adapter_size", "ia3_target_modules")},
        "base_params": base_count, "trainable_params": trainable_count,
        "trainable_pct": 100.0 * trainable_count / base_count,
        "frozen_bytes": frozen_bytes, "train_state_bytes": state_bytes,
        "trainable_bytes": tree_bytes(state["params"]),
        "xla": xla_memory(compiled), "device_memory": device_memory(device),
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "setup_s": setup_s, "compile_s": compile_s,
        "ms_per_step": 1e3 * median_s, "ms_per_step_mean": 1e3 * float(np.mean(timed)),
        "ms_per_step_min": 1e3 * float(np.min(timed)), "tokens_per_step": tokens,
        "tokens_per_s": tokens / median_s, "first_loss": losses[0], "final_loss": losses[-1],
        "losses": losses, "loss_finite": bool(np.all(np.isfinite(losses))),
    }


# ----------------------------------------------------------------------------- driver

def set_priority(nice: int) -> str:
    """Niceness for this worker, which runs alone in its own session.

    Linux schedules autogroups (one per session) against each other first, so the
    autogroup's niceness is what competes with other jobs; os.setpriority is the fallback.
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


def run_worker(argv: list[str], method: str, result_path: str, timeout: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--method", method, "--result", result_path]
    print(f"[bench] {method} ...", flush=True)
    start, load = time.perf_counter(), os.getloadavg()[0]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, start_new_session=True)
    except subprocess.TimeoutExpired:
        print(f"[bench]   {method}: timed out after {timeout} s", flush=True)
        return {"method": method, "error": f"timed out after {timeout} s"}
    if proc.returncode != 0:
        tail = (proc.stdout[-2000:] + proc.stderr[-6000:]).strip()
        sys.stderr.write(tail + "\n")
        print(f"[bench]   {method}: failed with exit code {proc.returncode}", flush=True)
        return {"method": method, "error": f"exit code {proc.returncode}: {tail[-500:]}"}
    with open(result_path, encoding="utf-8") as f:
        result = json.load(f)
    result["process_s"] = time.perf_counter() - start
    result["loadavg_1min_before_after"] = [load, os.getloadavg()[0]]
    print(f"[bench]   {result['trainable_params']:,} trainable, {result['tokens_per_s']:,.0f} tokens/s, "
          f"XLA peak {result['xla'].get('peak_estimate', 0) / MB:,.1f} MB, loss {result['first_loss']:.3f} -> "
          f"{result['final_loss']:.3f} ({result['process_s']:.0f} s)", flush=True)
    return result


def fastest(runs: list[dict]) -> dict:
    """The run with the lowest median step time; a failure only if every run failed."""
    ok = [r for r in runs if "error" not in r]
    return min(ok, key=lambda r: r["ms_per_step"]) if ok else runs[-1]


def _mb(n) -> str:
    return "n/a" if n is None else f"{n / MB:,.1f}"


def markdown_table(results: list[dict]) -> str:
    lines = ["| method | trainable params | % of base | frozen base MiB | train state MiB | XLA temp MiB "
             "| XLA peak MiB | device peak MiB | compile s | ms/step | tokens/s | loss first -> final |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['method']} | failed: {r['error'][:80]} |" + " |" * 10)
            continue
        pct = r["trainable_pct"]
        lines.append(
            f"| {r['method']} | {r['trainable_params']:,} | {pct:.3g}% | {_mb(r['frozen_bytes'])} "
            f"| {_mb(r['train_state_bytes'])} | {_mb(r['xla'].get('temp'))} | {_mb(r['xla'].get('peak_estimate'))} "
            f"| {_mb(r['device_memory'].get('peak_bytes_in_use'))} | {r['compile_s']:.1f} "
            f"| {r['ms_per_step']:,.0f} | {r['tokens_per_s']:,.0f} | {r['first_loss']:.3f} -> {r['final_loss']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.method:  # worker
        priority = set_priority(args.nice) if args.nice else "unchanged"
        result = run_method(args, args.method)
        result["priority"] = priority
        with open(args.result, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2, default=str)
        return

    # The driver never imports jax: on a GPU that would claim device memory the workers need.
    start = time.perf_counter()
    info = {"date": datetime.date.today().isoformat(), "machine": machine(), "versions": versions(PACKAGES),
            "command": "python " + " ".join([os.path.relpath(os.path.abspath(__file__))] + argv)}
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench_peft_") as tmp:
        for repeat in range(args.repeats):
            for method in args.method_list:
                run = run_worker(argv, method, os.path.join(tmp, f"{method}_{repeat}.json"), args.timeout)
                runs.append({**run, "repeat": repeat})
    results = [fastest([r for r in runs if r["method"] == m]) for m in args.method_list]
    ok = [r for r in results if "error" not in r]
    if ok:
        first = ok[0]
        info.update(device=first["device"], platform=first["platform"], devices=first["devices"],
                    jax=first["jax"], config=first["config"], settings=first["settings"],
                    base_params=first["base_params"], steps=args.steps, warmup=args.warmup, seed=args.seed,
                    repeats=args.repeats, nice=args.nice)
    info["results"] = results
    info["all_runs"] = runs
    info["total_s"] = time.perf_counter() - start
    table = markdown_table(results)
    print()
    print(table)
    print()
    if ok:
        s, c = info["settings"], info["config"]
        print(f"{info['device']} ({info['platform']}), jax {info['jax']}: {info['base_params'] / 1e6:,.2f}M-param "
              f"{c['family']} (hidden {c['hidden_size']}, {c['num_layers']} layers, vocab {c['vocab_size']}), "
              f"batch {s['batch']} x {s['seq']}, {s['dtype']} compute, remat {s['remat']}, "
              f"frozen base {s['frozen_dtype']}; {info['total_s']:.0f} s in all")
    backend = ok[0]["platform"] if ok else "unknown"
    if args.out:
        out = args.out
    elif args.quick:  # a smoke run never overwrites the committed results
        out = quick_out(f"bench_peft_{backend}_quick.json")
    else:
        out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", f"bench_peft_{backend}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2, default=str)
    print(f"results written to {out}")
    if len(ok) < len(results):
        sys.exit(1)


if __name__ == "__main__":
    main()
