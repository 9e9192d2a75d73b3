"""Serving throughput and latency on CPU: `python -m codejax.serve` under 1, 4 and 16 concurrent clients,
against codejax's `generate` called directly with batches of 1, 4 and 16 on the same prompts.

    python experiments/bench_serve.py                  # ~45 s on 2 cores; writes experiments/results/bench_serve.json
    python experiments/bench_serve.py --quick          # smoke run: fewer requests (JSON in the temp dir)

A benchmark, not a test: it prints a Markdown table and writes JSON (--out).

* One random Llama (the 5.05M-param shape of the other CPU benchmarks: hidden 256, 4 layers, 4 heads,
  2 kv heads, intermediate 704) with a 1024-token BPE tokenizer trained on a few stdlib files, saved
  as an HF directory with `save_hf`. Every request is a greedy completion of one of 32 short code
  prompts (one 16-token bucket) for exactly `--max_tokens` tokens (`ignore_eos`).
* Direct: `generate` in this process on B prompts at a time (B = 1, 4, 16), one untimed warm-up call
  per B (it compiles), then `--repeats` timed calls; a call's B requests all finish when it returns,
  so its latency is the call's time and requests/s = B / time.
* Server: a subprocess (`--max_batch 16 --batch_wait_ms 5 --chunk_size 8`), warmed up with one request
  of k rows for k = 1, 2, 4, 8, 16 (the padded batch shapes it compiles). Then C client threads
  (C = 1, 4, 16) each send `--requests` requests one after another over HTTP (urllib, a new
  connection each); latency is per request, from send to the parsed answer; requests/s is all
  requests over the wall time. The clients share the 2 cores with the server.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchinfo import machine, quick_out, versions  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PROMPTS = [f"def {name}({arg}):" for name in ("add", "merge", "parse", "split", "load", "save", "fetch", "sort")
           for arg in ("a, b", "path", "items", "x")]
LEVELS = (1, 4, 16)


def make_model(path: str) -> None:
    import jax
    import base64
    import csv
    import textwrap
    from codejax.models import family_config, init_params, save_hf
    from codejax.tokenizer import train_code_tokenizer
    tok = train_code_tokenizer([inspect.getsource(m) for m in (textwrap, csv, base64, json)], vocab_size=1024)
    cfg = family_config("llama", vocab_size=len(tok), hidden_size=256, intermediate_size=704, num_layers=4,
                        num_heads=4, num_kv_heads=2, max_position_embeddings=2048, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id)
    save_hf(path, cfg, init_params(cfg, jax.random.PRNGKey(0)), tokenizer=tok)


def percentiles(latencies: list[float]) -> dict:
    return {"p50_s": float(np.percentile(latencies, 50)), "p90_s": float(np.percentile(latencies, 90))}


def bench_direct(path: str, max_tokens: int, repeats: int) -> dict:
    """generate() in this process: B prompts per call."""
    import transformers
    from codejax.evaluation.sampling import encode_prompts
    from codejax.generate import SamplingParams, generate
    from codejax.models import load_hf
    model, params = load_hf(path)
    tok = transformers.AutoTokenizer.from_pretrained(path)
    ids = encode_prompts(tok, PROMPTS, "completion")
    sp = SamplingParams(max_new_tokens=max_tokens, eos_ids=(), chunk_size=8)
    out = {}
    for batch in LEVELS:
        calls = [ids[i * batch % len(ids):][:batch] for i in range(repeats)]
        generate(model, {"params": params}, tok, calls[0], sp)  # compiles this batch shape
        times = []
        for prompts in calls:
            start = time.perf_counter()
            generate(model, {"params": params}, tok, prompts, sp)
            times.append(time.perf_counter() - start)
        out[batch] = {"requests_per_s": batch * len(times) / sum(times), **percentiles(times),
                      "tokens_per_s": batch * max_tokens * len(times) / sum(times)}
        print(f"direct batch {batch}: {out[batch]['requests_per_s']:.1f} requests/s", flush=True)
    return out


def post(port: int, body: dict) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as resp:
        return json.loads(resp.read())


def start_server(path: str, log_path: str, batch_wait_ms: float = 5):
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "codejax.serve", "--model", path, "--port", "0", "--max_batch",
                             "16", "--batch_wait_ms", str(batch_wait_ms), "--chunk_size", "8", "--warmup_tokens", "0"],
                            stdout=subprocess.PIPE, stderr=log, text=True, cwd=os.path.dirname(HERE))
    line = proc.stdout.readline()
    match = re.match(r"codejax\.serve: listening on http://[0-9.]+:(\d+)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"the server did not start ({line!r}); its log: {log_path}")
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, int(match.group(1))


def bench_server(port: int, max_tokens: int, requests: int) -> dict:
    request = {"prompt": PROMPTS[0], "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}
    for rows in (1, 2, 4, 8, 16):  # one request of k rows compiles the k-row shape
        post(port, {**request, "prompt": PROMPTS[:rows]})
    out = {}
    for clients in LEVELS:
        def client(c):
            latencies = []
            for i in range(requests):
                start = time.perf_counter()
                answer = post(port, {**request, "prompt": PROMPTS[(c * requests + i) % len(PROMPTS)]})
                latencies.append(time.perf_counter() - start)
                assert answer["usage"]["completion_tokens"] == max_tokens, answer["usage"]
            return latencies

        before = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health").read())
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            latencies = [t for ts in pool.map(client, range(clients)) for t in ts]
        wall = time.perf_counter() - start
        after = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health").read())
        batches = after["batches"] - before["batches"]
        out[clients] = {"requests": len(latencies), "requests_per_s": len(latencies) / wall, **percentiles(latencies),
                        "tokens_per_s": len(latencies) * max_tokens / wall, "batches": batches,
                        "mean_rows_per_batch": (after["rows"] - before["rows"]) / max(batches, 1)}
        print(f"server, {clients} clients: {out[clients]['requests_per_s']:.1f} requests/s, "
              f"{out[clients]['mean_rows_per_batch']:.1f} rows per batch", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max_tokens", type=int, default=32)
    parser.add_argument("--requests", type=int, default=8, help="requests per client")
    parser.add_argument("--repeats", type=int, default=8, help="timed direct calls per batch size")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 requests per client, 2 repeats")
    parser.add_argument("--out", default=None, help="JSON results (default: experiments/results/bench_serve.json; "
                                                    "with --quick: the temp dir)")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.repeats = 2, 2
    args.out = args.out or (quick_out("bench_serve.json") if args.quick else os.path.join(HERE, "results", "bench_serve.json"))
    info = machine()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model")
        make_model(path)
        direct = bench_direct(path, args.max_tokens, args.repeats)
        proc, port = start_server(path, os.path.join(tmp, "server.log"))
        try:
            served = bench_server(port, args.max_tokens, args.requests)
        finally:
            proc.terminate()
            proc.wait(60)
    rows = []
    print("\n| concurrency / batch | server requests/s | server p50 s | server p90 s | rows per batch | "
          "direct requests/s | direct p50 s | direct p90 s | server / direct requests/s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for level in LEVELS:
        s, d = served[level], direct[level]
        row = {"level": level, "server": s, "direct": d, "ratio": s["requests_per_s"] / d["requests_per_s"]}
        rows.append(row)
        print(f"| {level} | {s['requests_per_s']:.1f} | {s['p50_s']:.3f} | {s['p90_s']:.3f} | "
              f"{s['mean_rows_per_batch']:.1f} | {d['requests_per_s']:.1f} | {d['p50_s']:.3f} | {d['p90_s']:.3f} | "
              f"{row['ratio']:.2f} |")
    import jax
    with open(args.out, "w") as f:
        json.dump({"machine": info, "device": jax.devices()[0].device_kind, "versions": versions(["jax", "flax"]),
                   "max_tokens": args.max_tokens, "requests_per_client": args.requests, "repeats": args.repeats,
                   "quick": args.quick, "rows": rows}, f, indent=2)
    print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
