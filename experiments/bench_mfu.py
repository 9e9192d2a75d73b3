"""Tokens/s and MFU of full fine-tuning (AdamW) of a Llama-shaped model, random init.

    python experiments/bench_mfu.py                       # GPU/TPU: ~1.1B params (preset llama-1b)
    python experiments/bench_mfu.py --size small         # CPU: a 4-layer, 256-wide model
    python experiments/bench_mfu.py --preset fsdp --remat full --batch 16 --seq 2048
    python experiments/bench_mfu.py --quick --out /tmp/mfu.json   # smoke run: small model, 2 x 64, 2 steps

FLOPs (nanoGPT / PaLM appendix B convention, see codejax/models/counting.py):
    training FLOPs per token = 6 * N_matmul + 6 * L * T * H * h     (causal attention: T/2 context)
    MFU = FLOPs per token * tokens per second / (peak FLOP/s per device * devices)
N_matmul counts every weight used in a matmul, lm_head included. Peak FLOP/s is the
dense bf16 figure of the device (codejax/train/loop.py PEAK_FLOPS), or --peak_flops.
On CPU there is no published peak, so only tokens/s is reported unless --peak_flops is given.

The timed region is `steps` train steps after `warmup` untimed ones (compilation
excluded), ended by a device sync. Data is random tokens already on the device,
so the figure is the step's, not the input pipeline's.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import numpy as np

from codejax.config import base_config
from codejax.models import Transformer, abstract_params, flops_per_token, init_params, logical_axes, param_counts
from codejax.models.config import family_config, preset_config
from codejax.objectives.lm import lm_loss_fn
from codejax.parallel import Parallel, make_mesh
from codejax.parallel.memory import estimate_memory
from codejax.train.loop import peak_flops_per_device
from codejax.train.optim import make_optimizer
from codejax.train.step import init_train_state, make_train_step


QUICK = dict(size="small", batch=2, seq=64, steps=2, warmup=1)


def model_config(size: str, remat: str, dtype: str):
    switches = dict(remat_policy=remat, dtype=dtype, param_dtype="float32", scan_layers=True)
    if size == "1b":
        return preset_config("llama-1b", **switches)
    return family_config("llama", vocab_size=4096, hidden_size=256, intermediate_size=704, num_layers=4,
                         num_heads=4, num_kv_heads=2, **switches)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=["1b", "small"], default=None, help="default: 1b on accelerators, small on CPU")
    p.add_argument("--batch", type=int, default=0, help="global rows per step (default 8 on accel, 8 on CPU)")
    p.add_argument("--seq", type=int, default=0, help="default 2048 on accelerators, 256 on CPU")
    p.add_argument("--remat", default="full")
    p.add_argument("--dtype", default="", help="compute dtype; default bfloat16 on accelerators, float32 on CPU")
    p.add_argument("--preset", default="fsdp", help="sharding preset over all local devices")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--peak_flops", type=float, default=0.0, help="per device; 0 = look up the device")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: the small model, batch 2 x 64, 1 warmup and 2 timed steps (explicit flags win)")
    p.add_argument("--out", default="", help="JSON path ('' = print only)")
    args = p.parse_args(argv)
    if args.quick:
        explicit = {a.lstrip("-").split("=")[0] for a in (argv if argv is not None else sys.argv[1:])}
        for k, v in QUICK.items():
            if k not in explicit:
                setattr(args, k, v)

    on_cpu = jax.devices()[0].platform == "cpu"
    size = args.size or ("small" if on_cpu else "1b")
    batch, seq = args.batch or 8, args.seq or (256 if on_cpu else 2048)
    dtype = args.dtype or ("float32" if on_cpu else "bfloat16")  # CPUs emulate bf16 matmuls slowly
    cfg = model_config(size, args.remat, dtype)
    par = Parallel.create(make_mesh(data=1, fsdp=-1, tensor=1), args.preset)
    optimizer, schedule = make_optimizer(base_config().optim, total_steps=1000)
    # The train state holds the trainable Flax variables dict ({"params": weights} for full
    # fine-tuning), so its shardings are built over that dict too.
    shardings = par.state_shardings(optimizer, {"params": abstract_params(cfg)}, {"params": logical_axes(cfg)})
    with par.context():
        state = jax.jit(lambda: init_train_state({"params": init_params(cfg, jax.random.PRNGKey(0))}, optimizer, 0),
                        out_shardings=shardings)()
    step = make_train_step(lm_loss_fn(Transformer(cfg)), optimizer, schedule, parallel=par,
                           state_shardings=shardings)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.vocab_size, size=(batch, seq + 1), dtype=np.int32)
    host_batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "weights": np.ones((batch, seq), np.float32),
                  "segment_ids": np.ones((batch, seq), np.int32),
                  "positions": np.tile(np.arange(seq, dtype=np.int32), (batch, 1))}
    device_batch = par.shard_batch(host_batch)

    start = time.perf_counter()
    for _ in range(args.warmup):
        state, metrics = step(state, device_batch)
    jax.block_until_ready(metrics)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.steps):
        state, metrics = step(state, device_batch)
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - start) / args.steps

    tokens_per_s = batch * seq / seconds
    fpt = flops_per_token(cfg, seq, causal=True)
    peak = peak_flops_per_device(args.peak_flops)
    mfu = fpt * tokens_per_s / (peak * jax.device_count()) if peak else None
    memory = estimate_memory(cfg, par, batch, seq)
    result = {
        "device": jax.devices()[0].device_kind, "devices": jax.device_count(), "size": size,
        "params": param_counts(cfg)["total"], "batch": batch, "seq": seq, "remat": args.remat,
        "dtype": dtype, "preset": args.preset, "ms_per_step": seconds * 1e3,
        "tokens_per_s": tokens_per_s, "flops_per_token": fpt, "achieved_tflops": fpt * tokens_per_s / 1e12,
        "mfu": mfu, "compile_and_warmup_s": first, "loss": float(metrics["loss"]),
        "estimated_gb_per_device": memory["total"] / 1e9,
    }
    print(json.dumps(result, indent=2))
    mfu_text = f"{100 * mfu:.1f}%" if mfu is not None else "n/a (no peak for this device)"
    print(f"\n{result['device']} x{result['devices']}: {result['params'] / 1e9:.2f}B params, "
          f"{tokens_per_s:,.0f} tokens/s, {result['achieved_tflops']:.2f} TFLOP/s, MFU {mfu_text}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
