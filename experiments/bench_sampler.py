"""Sampler throughput on CPU: codejax's KV-cache sampler vs transformers `generate`, same model.

    python experiments/bench_sampler.py                  # batch 1 and 16, ~3 min on 2 cores
    python experiments/bench_sampler.py --quick          # smoke run: 16 new tokens, 1 repeat (JSON in the temp dir)

A benchmark, not a test: it prints a Markdown table and writes JSON (--out).

* One random Llama (the 5.05M-param shape of the other CPU benchmarks: hidden 256, 4 layers,
  4 heads, 2 kv heads, intermediate 704, vocab 4096) is initialised by codejax and saved
  with `save_hf`; transformers loads the same directory (fp32, SDPA attention).
* Both decode greedily from the same left-padded random prompts (lengths 24..64) for exactly
  `--new_tokens` tokens (no EOS), with a KV cache: codejax `generate` (jitted prefill, then
  jitted decode chunks of 32 steps), transformers `model.generate(do_sample=False)`. The
  outputs are compared token for token, so the speed-up is for the same work.
* Each framework runs in its own subprocess, one after the other, using every core. One
  untimed warm-up call per batch size (codejax compiles there); the timed figure is the best
  of `--repeats` calls. tokens/s counts generated tokens (batch x new_tokens) per wall second.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

VOCAB = 4096


def _prompts(batch: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(10, VOCAB, int(rng.integers(24, 65))).tolist() for _ in range(batch)]


def _make_model(path: str) -> None:
    import jax
    from codejax.models import family_config, init_params, save_hf
    cfg = family_config("llama", vocab_size=VOCAB, hidden_size=256, intermediate_size=704, num_layers=4,
                        num_heads=4, num_kv_heads=2, max_position_embeddings=2048)
    save_hf(path, cfg, init_params(cfg, jax.random.PRNGKey(0)))


def _run_codejax(path, batches, new_tokens, repeats):
    from codejax.generate import SamplingParams, generate
    from codejax.models import load_hf
    model, params = load_hf(path)
    sp = SamplingParams(max_new_tokens=new_tokens, eos_ids=())
    out = {}
    for batch in batches:
        prompts = _prompts(batch)
        start = time.perf_counter()
        tokens = generate(model, {"params": params}, None, prompts, sp).tokens
        first = time.perf_counter() - start
        best = min(_timed(lambda: generate(model, {"params": params}, None, prompts, sp)) for _ in range(repeats))
        out[batch] = {"seconds": best, "first_call_s": first, "tokens": tokens}
    return out


def _run_transformers(path, batches, new_tokens, repeats, threads):
    import torch
    import transformers
    torch.set_num_threads(threads)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    out = {}
    for batch in batches:
        prompts = _prompts(batch)
        length = max(map(len, prompts))
        ids = torch.tensor([[0] * (length - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (length - len(p)) + [1] * len(p) for p in prompts])

        def call():
            with torch.no_grad():
                return model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens,
                                      min_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0)
        start = time.perf_counter()
        tokens = call()[:, length:].tolist()
        first = time.perf_counter() - start
        best = min(_timed(call) for _ in range(repeats))
        out[batch] = {"seconds": best, "first_call_s": first, "tokens": tokens}
    return out


def _agreeing_prefix(a: list[int], b: list[int]) -> int:
    """Tokens equal before the first difference (a random model's near-tied logits flip late)."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--new_tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--quick", action="store_true", help="smoke run: 16 new tokens, 1 repeat")
    parser.add_argument("--out", default=None,
                        help="JSON path; default experiments/results/bench_sampler_cpu.json "
                             "(with --quick: the temp dir)")
    parser.add_argument("--worker", choices=["codejax", "transformers"], help=argparse.SUPPRESS)
    parser.add_argument("--model_dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.new_tokens, args.repeats = 16, 1
    if args.out is None:  # a smoke run never overwrites the committed results
        args.out = (os.path.join(tempfile.gettempdir(), "bench_sampler_cpu_quick.json") if args.quick else
                    os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "bench_sampler_cpu.json"))
    batches = [int(b) for b in args.batches.split(",")]
    if args.worker:  # one framework in this process
        if args.worker == "codejax":
            result = _run_codejax(args.model_dir, batches, args.new_tokens, args.repeats)
        else:
            result = _run_transformers(args.model_dir, batches, args.new_tokens, args.repeats, args.threads)
        with open(args.result, "w") as f:
            json.dump(result, f)
        return

    with tempfile.TemporaryDirectory() as tmp:
        _make_model(os.path.join(tmp, "model"))
        results = {}
        for worker in ("transformers", "codejax"):
            path = os.path.join(tmp, f"{worker}.json")
            subprocess.run([sys.executable, __file__, "--worker", worker, "--model_dir", os.path.join(tmp, "model"),
                            "--result", path, "--batches", args.batches, "--new_tokens", str(args.new_tokens),
                            "--repeats", str(args.repeats), "--threads", str(args.threads)], check=True)
            with open(path) as f:
                results[worker] = {int(k): v for k, v in json.load(f).items()}
    rows = []
    print("| batch | new tokens | transformers tok/s | codejax tok/s | speed-up | codejax first call s | "
          "identical rows | mean agreeing prefix |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for batch in batches:
        hf, cj = results["transformers"][batch], results["codejax"][batch]
        n = batch * args.new_tokens
        row = {"batch": batch, "new_tokens": args.new_tokens, "transformers_tok_s": n / hf["seconds"],
               "codejax_tok_s": n / cj["seconds"], "speedup": hf["seconds"] / cj["seconds"],
               "codejax_first_call_s": cj["first_call_s"], "same_tokens": hf["tokens"] == cj["tokens"],
               "rows_identical": sum(a == b for a, b in zip(hf["tokens"], cj["tokens"])),
               "mean_agreeing_prefix": float(np.mean([_agreeing_prefix(a, b) for a, b in zip(hf["tokens"],
                                                                                           cj["tokens"])]))}
        rows.append(row)
        print(f"| {batch} | {args.new_tokens} | {row['transformers_tok_s']:,.0f} | {row['codejax_tok_s']:,.0f} | "
              f"{row['speedup']:.2f}x | {row['codejax_first_call_s']:.1f} | {row['rows_identical']}/{batch} | "
              f"{row['mean_agreeing_prefix']:.1f} |")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    import jax
    with open(args.out, "w") as f:
        json.dump({"device": jax.devices()[0].device_kind, "cpu_count": os.cpu_count(),
                   "load_avg": os.getloadavg(), "quick": args.quick, "rows": rows}, f, indent=2)
    print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
