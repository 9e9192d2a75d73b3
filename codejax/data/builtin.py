"""Built-in tokenizer and data, so every `:tiny` variant runs with no other flags (big_vision's `runlocal`).

    tokenizer.path = "builtin"    model.hf_path's tokenizer when that is set; otherwise a byte-level
                                  BPE (2048 tokens, ChatML template) trained on this Python's stdlib
    data.train_paths = "builtin"  rows for the job's data.format, made from local sources only:
        alpaca / chat            instruction pairs mined from stdlib functions (codejax.codedata.mine_tree)
        prompt_completion        the arithmetic-functions task (codejax.rl.environments)
        text                     stdlib source files
        preference pairs         the arithmetic task's right operator over a wrong one (dpo, reward)

Both are built once and cached under $CODEJAX_CACHE (default ~/.cache/codejax), keyed by the
Python version (its stdlib is the corpus), and written to a temporary folder that is renamed
into place, so concurrent runs never see a half-built cache. Nothing is downloaded. The
results are deterministic: a cache deleted and rebuilt gives the same tokenizer and rows, so a
checkpoint trained on them stays usable.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from typing import Callable

log = logging.getLogger(__name__)

BUILTIN = "builtin"
TOKENIZER_VOCAB, TOKENIZER_FILES = 2048, 150
SFT_FILES, TEXT_FILES, TASK_ROWS, PAIR_ROWS = 400, 60, 1024, 512
SFT_MAX_CHARS = 280
_VERSION = 4  # bump when what is built changes, so old caches are not reused


def cache_dir() -> str:
    root = os.environ.get("CODEJAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "codejax")
    return os.path.join(root, f"builtin-v{_VERSION}-py{sys.version_info.major}.{sys.version_info.minor}")


def _cached(name: str, build: Callable[[str], None]) -> str:
    """The folder `name` in the cache, built by `build(tmp_dir)` on first use."""
    final = os.path.join(cache_dir(), name)
    if os.path.isdir(final):
        return final
    os.makedirs(cache_dir(), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.", dir=cache_dir())
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first: use its copy
            if not os.path.isdir(final):
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def builtin_tokenizer_dir() -> str:
    def build(out: str) -> None:
        from codejax.tokenizer import train_stdlib_tokenizer
        log.info("building the built-in tokenizer (%d tokens, stdlib sources); cached in %s", TOKENIZER_VOCAB,
                 cache_dir())
        train_stdlib_tokenizer(out, vocab_size=TOKENIZER_VOCAB, max_files=TOKENIZER_FILES)
    return _cached(f"tokenizer-{TOKENIZER_VOCAB}", build)


def _write_jsonl(path: str, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def _sft_rows() -> list[dict]:
    from codejax.codedata import mine_tree
    rows, _ = mine_tree(max_files=SFT_FILES)
    # Short functions only, so the SFT tiny variants' seq_len (256 tokens) holds them whole.
    return [{k: r[k] for k in ("instruction", "input", "output")} for r in rows
            if len(r["instruction"]) + len(r["input"]) + len(r["output"]) <= SFT_MAX_CHARS]


def _chat_rows() -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"{r['instruction']}\n\n{r['input']}"},
                          {"role": "assistant", "content": r["output"]}]} for r in _sft_rows()]


def _text_rows() -> list[dict]:
    from codejax.corpus import list_source_files, read_source, stdlib_root
    rows = []
    for path in list_source_files(stdlib_root())[:TEXT_FILES]:
        text, _ = read_source(path)
        if text:
            rows.append({"text": text})
    return rows


def _task_rows() -> list[dict]:
    from codejax.rl.environments import arith_sft_rows
    return arith_sft_rows(TASK_ROWS, seed=3, correct_fraction=1.0)


def _pair_rows() -> list[dict]:
    from codejax.rl.environments import arith_pairs
    return arith_pairs(PAIR_ROWS, seed=1)


# data.format (or "pairs") -> (what it is, the rows)
BUILTIN_DATA: dict[str, tuple[str, Callable[[], list[dict]]]] = {
    "alpaca": ("instruction pairs mined from stdlib functions", _sft_rows),
    "chat": ("instruction pairs mined from stdlib functions, as chats", _chat_rows),
    "prompt_completion": ("the arithmetic-functions task's prompts and answers", _task_rows),
    "text": ("stdlib source files", _text_rows),
    "pairs": ("the arithmetic task: the right operator chosen over a wrong one", _pair_rows),
}


def builtin_data_path(kind: str) -> str:
    """The JSONL file of built-in rows for `kind` (a data.format, or "pairs")."""
    if kind not in BUILTIN_DATA:
        raise ValueError(f"data.train_paths='builtin' has no built-in rows for data.format={kind!r}; "
                         f"it has {sorted(BUILTIN_DATA)}")
    what, rows = BUILTIN_DATA[kind]

    def build(out: str) -> None:
        _write_jsonl(os.path.join(out, "train.jsonl"), rows())

    path = os.path.join(_cached(f"data-{kind}", build), "train.jsonl")
    log.info("data.train_paths='builtin': %s (%s)", what, path)
    return path


def resolve_tokenizer_path(config) -> str:
    path = config.tokenizer.path or config.model.hf_path
    if path == BUILTIN:
        return config.model.hf_path or builtin_tokenizer_dir()
    return path


def resolve_train_paths(paths: str, kind: str) -> str:
    return builtin_data_path(kind) if paths == BUILTIN else paths
