"""Shared fixtures for the preference and RL tests: a tokenizer fitted to the arithmetic task, and its data files."""
import json

import pytest

from codejax.rl.tasks import arith_pairs, arith_prompts, arith_sft_rows
from codejax.tokenizer import save_tokenizer, train_code_tokenizer


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="session")
def arith_dir(tmp_path_factory):
    """A tokenizer trained on the task's text, and train/eval files for each kind of job."""
    root = tmp_path_factory.mktemp("arith")
    texts = [r["prompt"] + r["answer"] for r in arith_prompts(2000, seed=99)]
    save_tokenizer(train_code_tokenizer(texts, vocab_size=320, min_frequency=1), root / "tokenizer")
    write_jsonl(root / "pairs_train.jsonl", arith_pairs(512, seed=1))
    write_jsonl(root / "pairs_eval.jsonl", arith_pairs(64, seed=2))
    write_jsonl(root / "sft_train.jsonl", arith_sft_rows(1024, seed=3))
    write_jsonl(root / "prompts_train.jsonl", arith_prompts(256, seed=4))
    write_jsonl(root / "prompts_eval.jsonl", arith_prompts(32, seed=5))
    return root
