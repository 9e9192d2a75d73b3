"""Built-in training rows for `data.train_paths = "builtin"`, made from local sources only:

    alpaca / chat        instruction pairs mined from stdlib functions (codejax.codedata.mine_tree),
                         short enough that the `:tiny` seq_len holds them whole
    prompt_completion    the arithmetic-functions task's prompts and answers (codejax.rl.environments)
    text                 stdlib source files
    pairs                the arithmetic task's right operator over a wrong one (dpo, reward)
    builtin:tools        the arith_tool task's tool-use trajectories, chats with tools (sft_tools)

Cached beside the built-in tokenizer (codejax/data/builtin.py). This module imports codedata and
rl, which import data, so it is resolved above them all: `get_job` (codejax/jobs/__init__.py)
replaces "builtin" with the cached file before the job starts, and the run's config.json names
that file.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Callable

import transformers

from codejax.codedata import mine_tree
from codejax.corpus import list_source_files, read_source, stdlib_root
from codejax.data.builtin import BUILTIN, builtin_tokenizer_dir, cached
from codejax.data.formats import ALPACA_PROMPT
from codejax.rl.environments import arith_pairs, arith_sft_rows, arith_tool_chats

log = logging.getLogger(__name__)

SFT_FILES, TEXT_FILES, TASK_ROWS, PAIR_ROWS, TOOL_ROWS = 1000, 60, 1024, 512, 2048
SFT_MAX_TOKENS = 120  # Alpaca template included, under the built-in tokenizer: fits `:tiny`'s seq_len of 128
PAIRS = "pairs"


def _write_jsonl(path: str, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def _sft_rows() -> list[dict]:
    """Mined functions short enough that the `:tiny` seq_len (128) holds them whole, Alpaca template
    included, under the built-in tokenizer."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(builtin_tokenizer_dir(), local_files_only=True)
    rows, _ = mine_tree(max_files=SFT_FILES)
    rows = [{k: r[k] for k in ("instruction", "input", "output")} for r in rows]
    lengths = [len(ids) for ids in tokenizer([ALPACA_PROMPT.format(**r) + r["output"] for r in rows])["input_ids"]]
    return [r for r, n in zip(rows, lengths) if n <= SFT_MAX_TOKENS]


def _chat_rows() -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"{r['instruction']}\n\n{r['input']}"},
                          {"role": "assistant", "content": r["output"]}]} for r in _sft_rows()]


def _text_rows() -> list[dict]:
    rows = []
    for path in list_source_files(stdlib_root())[:TEXT_FILES]:
        text, _ = read_source(path)
        if text:
            rows.append({"text": text})
    return rows


def _task_rows() -> list[dict]:
    return arith_sft_rows(TASK_ROWS, seed=3, correct_fraction=1.0)


def _pair_rows() -> list[dict]:
    return arith_pairs(PAIR_ROWS, seed=1)


def _tool_rows() -> list[dict]:
    return arith_tool_chats(TOOL_ROWS, seed=3, split="train")


# data.format (or "pairs", or the `tools` of data.train_paths='builtin:tools') -> (what it is, the rows)
BUILTIN_DATA: dict[str, tuple[str, Callable[[], list[dict]]]] = {
    "alpaca": ("instruction pairs mined from stdlib functions", _sft_rows),
    "chat": ("instruction pairs mined from stdlib functions, as chats", _chat_rows),
    "prompt_completion": ("the arithmetic-functions task's prompts and answers", _task_rows),
    "text": ("stdlib source files", _text_rows),
    PAIRS: ("the arithmetic task: the right operator chosen over a wrong one", _pair_rows),
    "tools": ("the arith_tool task's tool-use trajectories, as chats with tools", _tool_rows),
}


def builtin_data_path(kind: str) -> str:
    """The JSONL file of built-in rows for `kind` (a data.format, or "pairs")."""
    if kind not in BUILTIN_DATA:
        raise ValueError(f"data.train_paths='builtin' has no built-in rows for data.format={kind!r}; "
                         f"it has {sorted(BUILTIN_DATA)}")
    what, rows = BUILTIN_DATA[kind]

    def build(out: str) -> None:
        _write_jsonl(os.path.join(out, "train.jsonl"), rows())

    path = os.path.join(cached(f"data-{kind}", build), "train.jsonl")
    log.info("data.train_paths='builtin': %s (%s)", what, path)
    return path


def resolve_builtin_data(config, kind: str | None = None):
    """`config` with data.train_paths='builtin' replaced by the built-in rows for `kind` ("pairs"),
    or for data.format when `kind` is None; any other config is returned as it is."""
    path = config.data.train_paths
    if path != BUILTIN and not path.startswith(BUILTIN + ":"):
        return config
    named = path.partition(":")[2]  # 'builtin:tools' names its rows
    config = config.copy_and_resolve_references()
    config.data.train_paths = builtin_data_path(named or kind or config.data.format)
    return config
