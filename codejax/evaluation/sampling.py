"""Sampling for evaluation: prompt encoding, EOS ids, batched completions, and pass@k during training.

Shared by the eval job, the RL jobs (prompt encoding) and the training jobs
(`pass_at_k_hook`, eval.during_training).
"""
from __future__ import annotations

import collections
import json
import logging
import os
import time

import numpy as np
from tqdm.auto import tqdm

from codejax.evaluation.passk import parse_ks
from codejax.evaluation.scoring import score
from codejax.evaluation.benchmarks import check_mode, load_benchmark
from codejax.generate import SamplingParams, generate
from codejax.sandbox import Limits

log = logging.getLogger(__name__)

# End-of-turn tokens of common chat templates: a chat answer ends with the turn, which is not
# always the tokenizer's eos_token (Qwen's eos is <|endoftext|>, its turns end with <|im_end|>).
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|EOT|>", "<|endoftext|>")


def check_eval_config(ec) -> tuple[int, ...]:
    """Fail fast on a bad `config.eval`; returns the k of pass@k."""
    check_mode(ec.mode)
    ks = parse_ks(ec.k)
    if ec.n_samples < 1 or ec.max_new_tokens < 1 or ec.batch_size < 1 or ec.limit < 0:
        raise ValueError("eval.n_samples, eval.max_new_tokens and eval.batch_size must be >= 1, eval.limit >= 0")
    if ec.insecure_severity not in ("low", "medium", "high"):
        raise ValueError(f"eval.insecure_severity={ec.insecure_severity!r}; expected low, medium or high")
    if ec.timeout_s <= 0:
        raise ValueError(f"eval.timeout_s={ec.timeout_s}; must be > 0")
    if max(ks) > ec.n_samples:
        log.warning("eval.k=%s but eval.n_samples=%d: pass@k for k > n is skipped", ec.k, ec.n_samples)
    if ec.temperature == 0 and ec.n_samples > 1:
        log.warning("eval.temperature=0 (greedy) makes all %d samples of a problem identical", ec.n_samples)
    return ks


def eos_ids(tokenizer, model, mode: str, hf_path: str) -> tuple[int, ...]:
    """The sampler's default EOS set, plus (chat mode) the template's end-of-turn tokens and the ids
    in the HF model's generation_config.json."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    eos = model.cfg.eos_token_id
    ids.update(eos if isinstance(eos, tuple) else () if eos is None else (eos,))
    if mode == "chat":
        vocab = tokenizer.get_vocab()
        ids.update(vocab[t] for t in END_OF_TURN if t in vocab)
        gen_path = os.path.join(hf_path, "generation_config.json") if hf_path else ""
        if gen_path and os.path.exists(gen_path):
            with open(gen_path, encoding="utf-8") as f:
                gen_eos = json.load(f).get("eos_token_id")
            ids.update(gen_eos if isinstance(gen_eos, list) else [] if gen_eos is None else [gen_eos])
    return tuple(sorted(int(i) for i in ids))


def encode_prompts(tokenizer, prompts: list[str], mode: str) -> list[list[int]]:
    """Token ids of each prompt. A completion prompt gets the tokenizer's BOS when the tokenizer adds
    one (Llama-style models expect it; generate() itself adds no special tokens). A chat prompt is
    already rendered by the template, BOS included where the template puts one; nothing else is added
    (some tokenizers would append EOS)."""
    encoded = [list(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    bos = tokenizer.bos_token_id
    if mode == "completion" and bos is not None:
        probe = tokenizer("a", add_special_tokens=True)["input_ids"]
        if probe and probe[0] == bos and tokenizer("a", add_special_tokens=False)["input_ids"][:1] != [bos]:
            encoded = [[bos] + ids for ids in encoded]
    return encoded


def sample_completions(model, variables, tokenizer, prompt_ids: list[list[int]], ec, seed: int,
                       stop: tuple[str, ...], eos: tuple[int, ...],
                       progress: bool = False) -> tuple[list[dict], dict]:
    """eval.n_samples completions per prompt, in batches of eval.batch_size rows; `progress` shows a
    bar with the samples done, tokens/s and an ETA (the first batch includes the compile).

    Rows (prompt, sample) are sorted by prompt length so a batch pads little, and each batch has
    its own seed, so the samples of one prompt are independent draws. The last batch is padded
    with repeats to the full batch shape, which jit has compiled already.
    """
    rows = [(i, j) for i in range(len(prompt_ids)) for j in range(ec.n_samples)]
    rows.sort(key=lambda r: -len(prompt_ids[r[0]]))
    batch = max(1, min(ec.batch_size, len(rows)))
    out: dict[tuple[int, int], dict] = {}
    tokens, start = 0, time.monotonic()
    bar = tqdm(total=len(rows), desc="generate", unit="sample", disable=not progress, dynamic_ncols=True)
    for b, first in enumerate(range(0, len(rows), batch)):
        chunk = rows[first:first + batch]
        padded = chunk + [chunk[-1]] * (batch - len(chunk))
        params = SamplingParams(max_new_tokens=ec.max_new_tokens, temperature=ec.temperature, top_p=ec.top_p,
                                n=1, stop=stop, eos_ids=eos, seed=seed + b)
        result = generate(model, variables, tokenizer, [prompt_ids[i] for i, _ in padded], params)
        for r, key in enumerate(chunk):
            out[key] = {"completion": result.texts[r], "finish_reason": result.finish_reasons[r],
                        "num_tokens": len(result.tokens[r])}
            tokens += len(result.tokens[r])
        log.info("generated %d/%d samples", min(first + batch, len(rows)), len(rows))
        bar.update(len(chunk))
        bar.set_postfix(tokens_per_s=f"{tokens / max(time.monotonic() - start, 1e-9):.0f}")
    bar.close()
    seconds = time.monotonic() - start
    samples = [{"sample": j, **out[(i, j)], "_prompt": i} for i in range(len(prompt_ids)) for j in range(ec.n_samples)]
    stats = {"samples": len(samples), "batch_size": batch, "generated_tokens": tokens,
             "seconds": round(seconds, 2), "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
             "finish_reasons": dict(collections.Counter(s["finish_reason"] for s in samples)),
             "mean_prompt_tokens": float(np.mean([len(p) for p in prompt_ids]))}
    return samples, stats


def pass_at_k_hook(config, model, tokenizer):
    """`TrainInputs.extra_eval` for training jobs: pass@k of the current weights on eval.limit problems.

    Samples with the sampler and scores in the sandbox like the eval job, but keeps
    nothing on disk; returns {"eval/pass@{k}": value, "eval/sampler_tokens_per_s": ...}.
    """
    ec = config.eval
    ks = check_eval_config(ec)
    benchmark = load_benchmark(ec.task, ec.problems_path or None).limited(ec.limit)
    prompt_ids = encode_prompts(tokenizer, [benchmark.prompt(p, ec.mode, tokenizer) for p in benchmark.problems], ec.mode)
    eos = eos_ids(tokenizer, model, ec.mode, config.model.hf_path)

    def hook(variables: dict) -> dict[str, float]:
        samples, stats = sample_completions(model, variables, tokenizer, prompt_ids, ec, config.seed,
                                            benchmark.stop_words(ec.mode), eos)
        for s in samples:
            s["task_id"] = benchmark.problems[s.pop("_prompt")].task_id
        report = score(benchmark, samples, mode=ec.mode, ks=ks, limits=Limits(timeout_s=ec.timeout_s),
                       workers=ec.workers or None, progress=False)
        metrics = {f"eval/{name}": float(v) for name, v in report.summary["pass_at_k"].items()}
        metrics["eval/sampler_tokens_per_s"] = float(stats["tokens_per_s"])
        return metrics
    return hook
