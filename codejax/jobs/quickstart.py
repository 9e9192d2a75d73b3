"""Job `quickstart`: the whole post-training path on data every machine has.

Stages, each in its own folder of the workdir (a rerun skips finished stages
and resumes an interrupted one):

    corpus/     stdlib source files cut into chunks -> train/eval JSONL (split by file)
    tokenizer/  byte-level BPE trained on the training chunks
    pretrain/   a small model pretrained on the corpus (job `pretrain`)
    sft_data/   instruction pairs mined from stdlib functions, in the seed's
                {instruction, input, output} format, split by file
    sft/        SFT of the pretrained model (job `sft`)
    report.md   figures and plots of every stage

With model.hf_path set, the corpus, tokenizer and pretraining stages are
skipped and that local model (and its tokenizer) is fine-tuned instead. The training
stages run the `pretrain` and `sft` jobs through the job registry (no job imports another).
"""
from __future__ import annotations

import json
import logging
import math
import os
import time

from codejax.codedata import mine_tree, split_by_file, write_jsonl
from codejax.corpus import list_source_files, read_source, stdlib_root
from codejax.jobs import get_job, register
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


def build_sft_data(out_dir: str, max_files: int, eval_fraction: float, seed: int) -> dict:
    rows, stats = mine_tree(max_files=max_files)
    train, held_out = split_by_file(rows, eval_fraction, seed)
    write_jsonl(train, os.path.join(out_dir, "train.jsonl"))
    write_jsonl(held_out, os.path.join(out_dir, "eval.jsonl"))
    return {"files": stats.files_read, "pairs": stats.pairs, "train": len(train), "eval": len(held_out),
            "skipped_by_reason": dict(stats.skipped_by_reason)}


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


def _eval_curve(stage_dir: str) -> list[tuple[int, float]]:
    rows = read_metrics(os.path.join(stage_dir, "metrics.jsonl"))
    return [(r["step"], r["eval/loss"]) for r in rows if "eval/loss" in r]


def write_report(workdir: str, figures: dict) -> str:
    lines = ["# codejax quickstart report", ""]
    if "corpus" in figures:
        c = figures["corpus"]
        lines += [f"- **Corpus:** {c['files']} stdlib files ({c['bytes'] / 1e6:.1f} MB, {c['files_skipped']} "
                  f"skipped) cut into {c['train_chunks']} train / {c['eval_chunks']} held-out chunks.",
                  f"- **Tokenizer:** byte-level BPE, {figures['tokenizer']['vocab_size']} tokens."]
    s = figures["sft_data"]
    lines.append(f"- **SFT data:** {s['pairs']} instruction pairs from {s['files']} files: "
                 f"{s['train']} train / {s['eval']} held out (split by file).")
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
    for stage in ("pretrain", "sft"):
        if stage in figures:
            lines += [f"## {stage}", "", f"![{stage} loss]({stage}/plots/loss.png)",
                      f"![{stage} learning rate]({stage}/plots/learning_rate.png)", ""]
    path = os.path.join(workdir, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    return path


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
        pretrain_cfg.job = "pretrain"
        figures["pretrain"] = get_job("pretrain")(pretrain_cfg, os.path.join(workdir, "pretrain"))
        if figures["pretrain"]["stop_reason"] in STOPPED_BY_SIGNAL:  # stop here; a rerun resumes
            return {**figures, "stop_reason": figures["pretrain"]["stop_reason"]}
        model_dir = os.path.join(workdir, "pretrain", "hf_model")

    figures["sft_data"] = _stage(workdir, "sft_data", build_sft_data, q.sft_max_files, q.eval_fraction,
                                 config.seed)
    sft_dir = os.path.join(workdir, "sft_data")
    sft_cfg = _stage_config(
        config, **{"data.format": "alpaca", "data.train_paths": os.path.join(sft_dir, "train.jsonl"),
                   "data.eval_paths": os.path.join(sft_dir, "eval.jsonl"), "train.steps": q.sft_steps,
                   "data.seq_len": q.sft_seq_len, "data.batch_size": q.sft_batch_size,
                   "model.hf_path": model_dir, "tokenizer.path": tokenizer_dir, "optim.lr": q.sft_lr,
                   "train.export_hf": True})
    sft_cfg.job = "sft"
    figures["sft"] = get_job("sft")(sft_cfg, os.path.join(workdir, "sft"))
    figures["report"] = write_report(workdir, figures)
    with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(figures, f, indent=2, default=str)
    return figures
