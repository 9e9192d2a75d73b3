"""Preference rows -> pairs: formats, separate prompt/completion tokenization, masks, fitting, errors."""
import json
import re

import numpy as np
import pytest
import transformers

from codejax.data import DataError
from codejax.data.pairs import (PreferenceFields, build_pair_datasets, fit_pair, pair_row, parse_pair,
                                        tokenize_pairs)

FIELDS = PreferenceFields()


@pytest.fixture(scope="module")
def tok(arith_dir):
    return transformers.AutoTokenizer.from_pretrained(str(arith_dir / "tokenizer"))


def test_text_pairs_tokenize_prompt_and_completion_separately(tok):
    prompt, chosen = "def f(x):\n    return x", " + 3"
    pair, = tokenize_pairs(tok, [parse_pair({"prompt": prompt, "chosen": chosen, "rejected": " - 3"}, "r:1", FIELDS)],
                           ["r:1"])
    assert pair.prompt.tolist() == tok(prompt, add_special_tokens=False)["input_ids"]
    assert pair.chosen.tolist() == tok(chosen, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert pair.chosen_mask.all() and pair.rejected[-1] == tok.eos_token_id


def test_chat_pairs_explicit_and_implicit_prompt_agree(tok):
    user = [{"role": "user", "content": "add three"}]
    a = {"role": "assistant", "content": "x + 3"}
    b = {"role": "assistant", "content": "x - 3"}
    explicit = parse_pair({"prompt": user, "chosen": [a], "rejected": [b]}, "r:1", FIELDS)
    implicit = parse_pair({"chosen": user + [a], "rejected": user + [b]}, "r:2", FIELDS)
    assert explicit[:3] == implicit[:3]
    pair, = tokenize_pairs(tok, [explicit], ["r:1"])
    rendered = tok.apply_chat_template(user, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    assert pair.prompt.tolist() == rendered
    assert tok.decode(pair.chosen[pair.chosen_mask.astype(bool)]).startswith("x + 3")
    assert "<|im_end|>" in tok.decode(pair.chosen[pair.chosen_mask.astype(bool)])  # the model must learn to stop


@pytest.mark.parametrize("row, field", [
    ({"prompt": "p", "chosen": "c"}, "rejected"),
    ({"prompt": 3, "chosen": "c", "rejected": "r"}, "prompt"),
    ({"chosen": [{"role": "user", "content": "q"}], "rejected": [{"role": "user", "content": "q"}]}, "chosen"),
    ({"chosen": [{"role": "robot", "content": "q"}], "rejected": []}, "chosen[0].role"),
])
def test_bad_rows_name_the_field(row, field):
    with pytest.raises(DataError, match=re.escape(f"data.jsonl:7: field '{field}'")):
        parse_pair(row, "data.jsonl:7", FIELDS)


def test_margin_field_is_read_and_checked():
    fields = PreferenceFields(margin="m")
    assert parse_pair({"prompt": "", "chosen": "a", "rejected": "b", "m": 2}, "x:1", fields)[3] == 2.0
    with pytest.raises(DataError, match="field 'm'"):
        parse_pair({"prompt": "", "chosen": "a", "rejected": "b", "m": "big"}, "x:1", fields)


def test_overlong_pairs_keep_the_prompt_end_and_cut_completions(tok):
    pair, = tokenize_pairs(tok, [("a b c d e f g h i j k l m n o p", " + 3 + 4 + 5 + 6", " - 1", 0.0)], ["r"])
    fitted, truncated = fit_pair(pair, seq_len=12, max_prompt_len=6)
    assert truncated and fitted.prompt.tolist() == pair.prompt[-6:].tolist()
    assert len(fitted.prompt) + len(fitted.chosen) <= 13
    row = pair_row(fitted, 12, tok.pad_token_id)
    # Loss only on completion targets; the reward-model layout (shift=False) ends on the real EOS.
    assert row["chosen_weights"][:len(fitted.prompt) - 1].sum() == 0
    rm_row = pair_row(pair, 64, tok.pad_token_id, shift=False)
    last = int(rm_row["rejected_segment_ids"].sum()) - 1
    assert rm_row["rejected_inputs"][last] == tok.eos_token_id


def test_datasets_skip_bad_rows_with_counts_and_pad_the_eval_batch(tok, tmp_path):
    rows = [{"prompt": "p", "chosen": f" + {i}", "rejected": f" - {i}"} for i in range(10)] + [{"prompt": "p"}]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match="pairs.jsonl:11: field 'chosen'"):
        build_pair_datasets(tokenizer=tok, train_paths=[str(path)], seq_len=16, batch_size=4)
    data = build_pair_datasets(tokenizer=tok, train_paths=[str(path)], seq_len=16, batch_size=4, eval_fraction=0.3,
                               skip_bad_rows=True)
    assert data.stats["rows_skipped"] == 1 and data.stats["pairs"] + data.stats["eval_pairs"] == 10
    batches = list(data.eval())
    assert sum(int((b["chosen_segment_ids"].sum(1) > 0).sum()) for b in batches) == data.stats["eval_pairs"]
    train = next(iter(data.train))
    assert train["chosen_inputs"].shape == (4, 16) and train["margin"].shape == (4,)
    assert np.all(train["chosen_weights"].sum(1) > 0)
