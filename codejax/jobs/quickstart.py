"""Job `quickstart`: the whole post-training path on data every machine has.

Stages, each in its own folder of the workdir (a rerun skips finished stages
and resumes an interrupted one):

    corpus/     stdlib source files cut into chunks -> train/eval JSONL (split by file)
    tokenizer/  byte-level BPE trained on the training chunks
    pretrain/   a small model pretrained on the corpus (job `pretrain`)
    sft_data/   instruction pairs mined from stdlib functions (the seed's {instruction, input,
                output} rows, written as prompt/completion through the Alpaca template), split
                by file, plus the arithmetic task's warm-start rows
    sft/        SFT of the pretrained model (job `sft`)
    task/       the arithmetic-function task (codejax/rl/environments.py): DPO pairs, RL
                prompts with unit tests, and held-out problems in HumanEval format
    dpo/        DPO of the SFT model on the task's pairs (job `dpo`)
    grpo/       GRPO of the DPO model, rewarded by the unit tests run in the sandbox (job `grpo`)
    eval/STAGE/ pass@k of each stage's model on the held-out problems (job `eval`)
    report.md   figures, plots, the pass@k table and sample completions of every stage

The task's held-out problems are (operator, variable, constant) combinations that no stage
trains on, so pass@k measures what was learnt, not what was memorised.
With model.hf_path set, the corpus, tokenizer and pretraining stages are skipped and that
local model (and its tokenizer) is fine-tuned instead; quickstart.align=False stops after SFT.
The stages run the `pretrain`, `sft`, `dpo`, `grpo` and `eval` jobs through the job registry
(no job imports another).
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import time

from codejax.codedata import mine_tree, split_by_file, write_jsonl
from codejax.corpus import list_source_files, read_source, stdlib_root
from codejax.data.formats import alpaca_prompt
from codejax.jobs import get_job, register
from codejax.rl.environments import arith_humaneval, arith_pairs, arith_prompts, arith_sft_rows
from codejax.tokenizer import train_code_tokenizer
from codejax.train.guard import STOPPED_BY_SIGNAL
from codejax.train.metrics import read_metrics

log = logging.getLogger(__name__)


def chunk_source(text: str, max_chars: int) -> list[str]:
    """Cut a file at blank lines into pieces of at most ~max_chars, keeping code blocks whole."""
    chunks, current = [], ""
    for block in text.split("\n\n"):
        piece = block + "\n\n"
        if current and len(current) + len(piece) > max_chars:
            chunks.append(current)
            current = ""
        current += piece
    if current.strip():
        chunks.append(current)
    return chunks


def build_corpus(out_dir: str, max_files: int, max_chars: int, eval_fraction: float, seed: int) -> dict:
    """stdlib sources -> chunked {text, path} rows, split by file so no file spans both splits.

    Files and their root-relative paths are the ones `mine_tree` uses for the SFT pairs,
    so `split_by_file` holds out the same files in both stages: the SFT held-out
    functions come from files the pretraining never saw either.
    """
    root = stdlib_root()
    rows, files, skipped, size = [], 0, [], 0
    for path in list_source_files(root)[:max_files]:
        text, reason = read_source(path)
        if text is None:
            skipped.append((str(path), reason))
            continue
        files, size = files + 1, size + len(text.encode("utf-8"))
        rel = path.relative_to(root).as_posix()
        rows.extend({"text": chunk, "path": rel} for chunk in chunk_source(text, max_chars))
    if skipped:
        log.warning("corpus: skipped %d files: %s", len(skipped), skipped)
    train, held_out = split_by_file(rows, eval_fraction, seed)
    write_jsonl(train, os.path.join(out_dir, "train.jsonl"))
    write_jsonl(held_out, os.path.join(out_dir, "eval.jsonl"))
    return {"files": files, "bytes": size, "files_skipped": len(skipped),
            "train_chunks": len(train), "eval_chunks": len(held_out)}


def build_sft_data(out_dir: str, max_files: int, eval_fraction: float, seed: int, task_rows: int = 0) -> dict:
    """Mined instruction pairs (held out by file) as prompt/completion rows, the prompt being the
    Alpaca template the `alpaca` format would build, so `task_rows` rows of the arithmetic task
    (codejax/rl/environments.py, training combinations only) can join the training file."""
    rows, stats = mine_tree(max_files=max_files)
    train, held_out = split_by_file(rows, eval_fraction, seed)

    def as_completion(row):
        return {"prompt": alpaca_prompt(row["instruction"], row["input"]), "completion": row["output"],
                "path": row["path"]}

    train = [as_completion(r) for r in train]
    task = arith_sft_rows(task_rows, seed=seed, split="train") if task_rows else []
    mixed = train + task
    random.Random(seed).shuffle(mixed)
    write_jsonl(mixed, os.path.join(out_dir, "train.jsonl"))
    write_jsonl([as_completion(r) for r in held_out], os.path.join(out_dir, "eval.jsonl"))
    return {"files": stats.files_read, "pairs": stats.pairs, "train": len(train), "eval": len(held_out),
            "task_rows": len(task), "skipped_by_reason": dict(stats.skipped_by_reason)}


def _unique_prompts(rows: list[dict]) -> list[dict]:
    seen: set[str] = set()
    return [r for r in rows if not (r["prompt"] in seen or seen.add(r["prompt"]))]


def build_task_data(out_dir: str, pairs: int, seed: int) -> dict:
    """The arithmetic task's files: DPO pairs and RL prompts from the training combinations, and
    their held-out counterparts (every held-out problem once) from the other combinations."""
    files = {
        "pairs_train": arith_pairs(pairs, seed=seed, split="train"),
        "pairs_eval": arith_pairs(max(64, pairs // 8), seed=seed + 1, split="held_out"),
        "prompts_train": arith_prompts(512, seed=seed + 2, split="train"),
        "prompts_eval": _unique_prompts(arith_prompts(1000, seed=seed + 3, split="held_out")),
        "problems": arith_humaneval("held_out"),
    }
    for name, rows in files.items():
        write_jsonl(rows, os.path.join(out_dir, f"{name}.jsonl"))
    return {name: len(rows) for name, rows in files.items()}


def _stage(workdir: str, name: str, fn, *args) -> dict:
    """Run a data-building stage once; its figures are cached in stage.json."""
    out_dir = os.path.join(workdir, name)
    marker = os.path.join(out_dir, "stage.json")
    if os.path.exists(marker):
        with open(marker, encoding="utf-8") as f:
            return json.load(f)
    os.makedirs(out_dir, exist_ok=True)
    start = time.time()
    figures = fn(out_dir, *args) or {}
    figures["seconds"] = round(time.time() - start, 1)
    with open(marker, "w", encoding="utf-8") as f:
        json.dump(figures, f, indent=2)
    return figures


def _train_tokenizer(out_dir: str, corpus_dir: str, vocab_size: int) -> dict:
    with open(os.path.join(corpus_dir, "train.jsonl"), encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    tokenizer = train_code_tokenizer(texts, vocab_size=vocab_size)
    tokenizer.save_pretrained(out_dir)
    return {"vocab_size": len(tokenizer)}


def _stage_config(config, **changes):
    """A copy of the quickstart config with dotted-path fields changed."""
    stage = config.copy_and_resolve_references()
    for dotted, value in changes.items():
        section, field = dotted.split(".")
        setattr(getattr(stage, section), field, value)
    return stage


def _fmt(value, spec=".3f"):
    return "n/a" if value is None else format(value, spec)


def _eval_curve(stage_dir: str, key: str = "eval/loss") -> list[tuple[int, float]]:
    rows = read_metrics(os.path.join(stage_dir, "metrics.jsonl"))
    return [(r["step"], r[key]) for r in rows if key in r]


def _ends(stage_dir: str, key: str) -> str:
    curve = _eval_curve(stage_dir, key)
    return f"{_fmt(curve[0][1])} -> {_fmt(curve[-1][1])}" if curve else "n/a"


def _first_samples(eval_dir: str, limit: int) -> dict[str, tuple[str, str]]:
    """task_id -> (the first sample's completion, its status), for the first `limit` problems."""
    with open(os.path.join(eval_dir, "samples.jsonl"), encoding="utf-8") as f:
        samples = [json.loads(line) for line in f]
    with open(os.path.join(eval_dir, "results.jsonl"), encoding="utf-8") as f:
        status = {r["task_id"]: r["samples"][0]["status"] for r in map(json.loads, f)}
    first: dict[str, tuple[str, str]] = {}
    for s in samples:
        if s["task_id"] not in first and len(first) < limit:
            first[s["task_id"]] = (s["completion"], status.get(s["task_id"], "?"))
    return first


def _cell(text: str) -> str:
    return "`" + text.replace("`", "'").replace("|", "\\|").replace("\n", "\\n") + "`"


def _alignment_report(workdir: str, figures: dict) -> list[str]:
    evals = figures["eval"]
    t = figures["task"]
    any_eval = next(iter(evals.values()))
    ks = [int(k[len("pass@"):]) for k in any_eval["pass_at_k"]]
    lines = ["## Alignment on the arithmetic-function task", "",
             f"Complete `def f(x):` / `\"\"\"Return x plus 3.\"\"\"` / `return x` so that three asserts pass in the "
             f"sandbox. DPO trains on {t['pairs_train']} pairs and GRPO on {t['prompts_train']} prompts, both from "
             f"the training combinations; pass@k is measured on the {t['problems']} held-out (operator, variable, "
             f"constant) combinations, {any_eval['samples_per_problem']} samples each at temperature "
             f"{any_eval['temperature']}.", "",
             "| model after | " + " | ".join(f"pass@{k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for stage, summary in evals.items():
        lines.append(f"| {stage} | " + " | ".join(_fmt(summary["pass_at_k"].get(f"pass@{k}")) for k in ks) + " |")
    if "dpo" in figures:
        lines += ["", f"- **DPO** ({figures['dpo']['steps']} steps): held-out accuracy "
                      f"{_ends(os.path.join(workdir, 'dpo'), 'eval/rewards/accuracy')}, margin "
                      f"{_ends(os.path.join(workdir, 'dpo'), 'eval/rewards/margin')}."]
    if "grpo" in figures:
        lines.append(f"- **GRPO** ({figures['grpo']['steps']} steps): held-out reward (greedy) "
                     f"{_ends(os.path.join(workdir, 'grpo'), 'eval/reward')}.")
    lines += ["", "![DPO accuracy](dpo/plots/accuracy.png)", "![GRPO reward](grpo/plots/reward.png)", "",
              "### Sample completions (held-out problems, each model's first sample)", "",
              "| problem | " + " | ".join(evals) + " |", "|---|" + "---|" * len(evals)]
    firsts = {stage: _first_samples(os.path.join(workdir, "eval", stage), 6) for stage in evals}
    with open(os.path.join(workdir, "task", "problems.jsonl"), encoding="utf-8") as f:
        problems = {r["task_id"]: r["prompt"] for r in map(json.loads, f)}
    for task_id in firsts[next(iter(evals))]:
        doc = problems[task_id].split('"""')[1]
        cells = []
        for stage in evals:
            completion, status = firsts[stage].get(task_id, ("", "?"))
            cells.append(f"{_cell(completion)} {'pass' if status == 'passed' else 'fail'}")
        lines.append(f"| {doc} | " + " | ".join(cells) + " |")
    return lines + [""]


def write_report(workdir: str, figures: dict) -> str:
    lines = ["# codejax quickstart report", ""]
    if "corpus" in figures:
        c = figures["corpus"]
        lines += [f"- **Corpus:** {c['files']} stdlib files ({c['bytes'] / 1e6:.1f} MB, {c['files_skipped']} "
                  f"skipped) cut into {c['train_chunks']} train / {c['eval_chunks']} held-out chunks.",
                  f"- **Tokenizer:** byte-level BPE, {figures['tokenizer']['vocab_size']} tokens."]
    s = figures["sft_data"]
    task_rows = f", plus {s['task_rows']} rows of the arithmetic task" if s.get("task_rows") else ""
    lines.append(f"- **SFT data:** {s['pairs']} instruction pairs from {s['files']} files: "
                 f"{s['train']} train / {s['eval']} held out (split by file){task_rows}.")
    lines += ["", "| stage | steps | final train loss | held-out loss at start | held-out loss at end "
              "| held-out perplexity at end | seconds |", "|---|---|---|---|---|---|---|"]
    for stage in ("pretrain", "sft"):
        if stage in figures:
            r = figures[stage]
            curve = _eval_curve(os.path.join(workdir, stage))
            first = curve[0][1] if curve and curve[0][0] == 0 else None
            last = curve[-1][1] if curve else None
            lines.append(f"| {stage} | {r['steps']} | {_fmt(r['final_train_loss'])} | {_fmt(first)} "
                         f"| {_fmt(last)} | {_fmt(None if last is None else math.exp(last), '.1f')} "
                         f"| {r['seconds_this_run']:.0f} |")
    lines.append("")
    if figures.get("eval"):
        lines += _alignment_report(workdir, figures)
    for stage in ("pretrain", "sft"):
        if stage in figures:
            lines += [f"## {stage}", "", f"![{stage} loss]({stage}/plots/loss.png)",
                      f"![{stage} learning rate]({stage}/plots/learning_rate.png)", ""]
    path = os.path.join(workdir, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return path


def _train(figures: dict, name: str, config, workdir: str, job: str | None = None) -> bool:
    """Run training stage `name` (job `job`, default `name`) in workdir/name; True if a signal stopped it."""
    config.job = job or name
    figures[name] = get_job(config.job)(config, os.path.join(workdir, name))
    return figures[name]["stop_reason"] in STOPPED_BY_SIGNAL  # stop here; a rerun resumes


def _evaluate(config, workdir: str, stage: str, problems: str) -> dict:
    """pass@k of stage `stage`'s latest checkpoint on the held-out problems (done once: a rerun reads it)."""
    out = os.path.join(workdir, "eval", stage)
    done = os.path.join(out, "summary.json")
    if not os.path.exists(done):
        _run_eval(config, out, os.path.join(workdir, stage), problems)
    with open(done, encoding="utf-8") as f:
        summary = json.load(f)
    return {"pass_at_k": summary["pass_at_k"], "samples_per_problem": summary["samples_per_problem"]["max"],
            "temperature": summary["config"]["temperature"], "summary": done}


def _run_eval(config, out: str, run_dir: str, problems: str) -> None:
    q = config.quickstart
    eval_cfg = _stage_config(config, **{
        "eval.task": "humaneval", "eval.problems_path": problems, "eval.checkpoint_dir": run_dir,
        "eval.n_samples": q.eval_samples, "eval.k": q.eval_k, "eval.temperature": q.eval_temperature,
        "eval.max_new_tokens": 8})
    eval_cfg.job = "eval"
    get_job("eval")(eval_cfg, out)


def _align(config, workdir: str, figures: dict, model_dir: str, tokenizer_dir: str) -> str | None:
    """DPO then GRPO on the arithmetic task, then pass@k of every stage; a signal's stop_reason, or None."""
    q = config.quickstart
    figures["task"] = _stage(workdir, "task", build_task_data, q.task_pairs, config.seed)
    task = os.path.join(workdir, "task")
    dpo_cfg = _stage_config(config, **{
        "data.train_paths": os.path.join(task, "pairs_train.jsonl"), "data.eval_paths": os.path.join(task, "pairs_eval.jsonl"),
        "data.pack": False, "data.seq_len": 96, "data.batch_size": 16, "model.hf_path": model_dir,
        "tokenizer.path": tokenizer_dir, "train.steps": q.dpo_steps, "train.eval_every": max(1, q.dpo_steps // 3),
        "train.checkpoint_every": q.dpo_steps, "train.log_every": max(1, q.dpo_steps // 10), "optim.lr": q.dpo_lr,
        "optim.warmup_steps": max(1, q.dpo_steps // 10), "preference.beta": q.dpo_beta, "train.export_hf": True})
    if _train(figures, "dpo", dpo_cfg, workdir):
        return figures["dpo"]["stop_reason"]
    grpo_cfg = _stage_config(config, **{
        "rl.prompts_path": os.path.join(task, "prompts_train.jsonl"),
        "rl.eval_prompts_path": os.path.join(task, "prompts_eval.jsonl"), "rl.rewards": "unit_tests",
        "rl.prompts_per_step": q.grpo_prompts_per_step, "rl.group_size": q.grpo_group_size, "rl.max_new_tokens": 8,
        "rl.stop": "\n", "model.hf_path": os.path.join(workdir, "dpo", "hf_model"), "tokenizer.path": tokenizer_dir,
        "train.steps": q.grpo_steps, "train.eval_every": max(1, q.grpo_steps // 3), "train.log_every": 1,
        "train.checkpoint_every": q.grpo_steps, "train.best_metric": "eval/reward", "train.best_mode": "max",
        "optim.lr": q.grpo_lr, "optim.warmup_steps": 0, "optim.schedule": "constant", "train.export_hf": True})
    if _train(figures, "grpo", grpo_cfg, workdir):
        return figures["grpo"]["stop_reason"]
    problems = os.path.join(task, "problems.jsonl")
    figures["eval"] = {stage: _evaluate(config, workdir, stage, problems)
                       for stage in ("pretrain", "sft", "dpo", "grpo") if stage in figures}
    return None


@register("quickstart")
def run_quickstart(config, workdir: str) -> dict:
    q = config.quickstart
    figures: dict = {}
    model_dir = config.model.hf_path
    tokenizer_dir = config.tokenizer.path or model_dir
    if not model_dir:
        figures["corpus"] = _stage(workdir, "corpus", build_corpus, q.corpus_max_files, q.chunk_chars,
                                   q.eval_fraction, config.seed)
        corpus = os.path.join(workdir, "corpus")
        figures["tokenizer"] = _stage(workdir, "tokenizer", _train_tokenizer, corpus, q.vocab_size)
        tokenizer_dir = os.path.join(workdir, "tokenizer")
        pretrain_cfg = _stage_config(
            config, **{"data.format": "text", "data.train_paths": os.path.join(corpus, "train.jsonl"),
                       "data.eval_paths": os.path.join(corpus, "eval.jsonl"), "train.steps": q.pretrain_steps,
                       "tokenizer.path": tokenizer_dir, "optim.lr": q.pretrain_lr, "train.export_hf": True})
        if _train(figures, "pretrain", pretrain_cfg, workdir):
            return {**figures, "stop_reason": figures["pretrain"]["stop_reason"]}
        model_dir = os.path.join(workdir, "pretrain", "hf_model")

    figures["sft_data"] = _stage(workdir, "sft_data", build_sft_data, q.sft_max_files, q.eval_fraction,
                                 config.seed, q.task_sft_rows if q.align else 0)
    sft_dir = os.path.join(workdir, "sft_data")
    sft_cfg = _stage_config(
        config, **{"data.format": "prompt_completion", "data.train_paths": os.path.join(sft_dir, "train.jsonl"),
                   "data.eval_paths": os.path.join(sft_dir, "eval.jsonl"), "train.steps": q.sft_steps,
                   "data.seq_len": q.sft_seq_len, "data.batch_size": q.sft_batch_size,
                   "model.hf_path": model_dir, "tokenizer.path": tokenizer_dir, "optim.lr": q.sft_lr,
                   "train.export_hf": True})
    if _train(figures, "sft", sft_cfg, workdir):
        return {**figures, "stop_reason": figures["sft"]["stop_reason"]}
    if q.align:
        stopped = _align(config, workdir, figures, os.path.join(workdir, "sft", "hf_model"), tokenizer_dir)
        if stopped:
            return {**figures, "stop_reason": stopped}
    figures["report"] = write_report(workdir, figures)
    with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(figures, f, indent=2, default=str)
    return figures
