"""RL prompt rows: read from rl.prompts_path (or a built-in environment), split, and tokenized.

Rows are `{"prompt": str, ...}`; the other fields are the columns the reward functions read
(`tests`, `code_prefix`, ...; see codejax/rl/rewards.py). Identical prompts always land on the
same side of the train/eval split.
"""
from __future__ import annotations

import hashlib

from codejax.data import sources
from codejax.data.errors import DataError
from codejax.data.formats import require_string
from codejax.evaluation.sampling import encode_prompts
from codejax.rl.environments import ENVIRONMENTS
from codejax.rl.rewards import test_blocks

ENVIRONMENT_SIZE = 2048  # prompts drawn from a built-in environment (then split by rl.eval_fraction)


def _held_out(text: str, seed: int, fraction: float) -> bool:
    digest = hashlib.sha256(f"{seed}\0{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64 < fraction


def read_prompt_rows(paths: str) -> list[dict]:
    """The checked prompt rows of comma-separated files: a bad row or test names its file and line."""
    rows = []
    for where, row in sources.read_rows(sources.split_paths(paths)):
        if isinstance(row, DataError):
            raise row
        require_string(row, "prompt", where)
        if row.get("tests") is not None:  # a broken test would score every completion 0, mid-run
            test_blocks(row["tests"], row.get("entry_point") or "", row.get("setup") or "", where)
        rows.append(row)
    return rows


def load_prompt_rows(config) -> tuple[list[dict], list[dict]]:
    """(train, eval) prompt rows: rl.eval_prompts_path's rows are the eval set when given, else
    rl.eval_fraction of the prompts is held out (identical prompts always land on the same side)."""
    rc = config.rl
    if rc.eval_prompts_path:
        if not rc.prompts_path:
            raise ValueError("rl.eval_prompts_path is set but rl.prompts_path is not: give the training prompts too")
        return read_prompt_rows(rc.prompts_path), read_prompt_rows(rc.eval_prompts_path)
    if rc.prompts_path:
        rows = read_prompt_rows(rc.prompts_path)
    elif rc.builtin_task in ENVIRONMENTS:
        rows = ENVIRONMENTS[rc.builtin_task](ENVIRONMENT_SIZE, seed=config.seed)
    else:
        raise ValueError(f"rl.builtin_task={rc.builtin_task!r}; known: {sorted(ENVIRONMENTS)} (or set rl.prompts_path)")
    train = [r for r in rows if not _held_out(r["prompt"], config.seed, rc.eval_fraction)]
    held = [r for r in rows if _held_out(r["prompt"], config.seed, rc.eval_fraction)]
    if not train:
        raise ValueError(f"no training prompts (of {len(rows)}) with rl.eval_fraction={rc.eval_fraction}")
    return train, held


def attach_prompt_ids(rows: list[dict], tokenizer, chat: bool, env: str = "") -> list[dict]:
    """Each row with its "prompt_ids" (through the chat template with rl.chat). With an environment
    (rl.env) the first user turn is the environment's `reset(row)`, and its tools are in the system turn."""
    texts = [r["prompt"] for r in rows]
    tools = None
    if env:
        from codejax.rl.tool_envs import env_tools, make_env
        texts = [make_env(env, r).reset(r) for r in rows]
        tools, chat = env_tools(env) or None, True
    if chat:
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": t}], tools=tools,
                                               add_generation_prompt=True, tokenize=False) for t in texts]
    ids = encode_prompts(tokenizer, texts, "chat" if chat else "completion")
    return [{**r, "prompt_ids": i} for r, i in zip(rows, ids)]
