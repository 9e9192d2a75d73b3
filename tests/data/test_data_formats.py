"""Tests for codejax.data.formats: loss masks, separate tokenization, templates, checks."""

import itertools

import numpy as np
import pytest

from codejax.data import (
    ALPACA_PROMPT,
    ALPACA_PROMPT_NO_INPUT,
    DataError,
    FormatSpec,
    parse_row,
    to_training_row,
    tokenize_parsed,
)
from codejax.tokenizer import IM_END

WHERE = "/data/train.jsonl:1"

LCS = {"instruction": "Write a function to find the longest common subsequence",
       "input": "def lcs(s1: str, s2: str) -> int:",
       "output": "    m, n = len(s1), len(s2)\n    return m + n\n"}

CONVERSATION = {"messages": [
    {"role": "system", "content": "You write Python."},
    {"role": "user", "content": "Add two numbers."},
    {"role": "assistant", "content": "def add(a, b):\n    return a + b"},
    {"role": "tool", "content": "tests: 3 passed"},
    {"role": "user", "content": "Now subtract."},
    {"role": "assistant", "content": "def sub(a, b):\n    return a - b"},
]}


def _example(tok, fmt, row, **spec_kwargs):
    spec = FormatSpec(fmt, **spec_kwargs)
    [example] = tokenize_parsed(spec, tok, [parse_row(spec, row, WHERE)])
    return example


def _weighted_runs(tok, example):
    """Decoded text of each maximal run of weighted targets."""
    row = to_training_row(example)
    runs = itertools.groupby(zip(row["targets"], row["weights"]), key=lambda p: p[1])
    return [tok.decode([int(t) for t, _ in group]) for w, group in runs if w == 1.0]


def test_alpaca_weights_exactly_the_output_and_eos(tok):
    assert tok.eos_token_id == tok.pad_token_id  # the trap this mask must avoid
    ids, mask = _example(tok, "alpaca", LCS)
    row = to_training_row((ids, mask))
    weighted = row["targets"][row["weights"] == 1]
    assert tok.decode(weighted) == LCS["output"] + tok.eos_token
    assert weighted[-1] == tok.eos_token_id and row["weights"][-1] == 1.0
    # Nothing of the prompt is weighted: the unweighted targets decode to the prompt minus
    # its first token (which is only ever an input).
    prompt = ALPACA_PROMPT.format(instruction=LCS["instruction"], input=LCS["input"])
    assert tok.decode(ids[mask == 0]) == prompt
    assert tok.decode(row["targets"][row["weights"] == 0]) == tok.decode(ids[1:][mask[1:] == 0])


def _in_document(tok, text):
    """How `text` tokenises inside a document, at a line start (after a first line of its own)."""
    head = tok("# header\n")["input_ids"]
    ids = tok("# header\n" + text)["input_ids"]
    assert ids[:len(head)] == head
    return ids[len(head):]


def test_alpaca_is_prompt_ids_plus_output_ids_plus_eos(tok):
    ids, _ = _example(tok, "alpaca", LCS)
    prompt = ALPACA_PROMPT.format(instruction=LCS["instruction"], input=LCS["input"])
    expected = tok(prompt)["input_ids"] + _in_document(tok, LCS["output"]) + [tok.eos_token_id]
    assert ids.tolist() == expected


def test_completion_tokens_match_how_the_text_tokenizes_inside_a_document(tok):
    """The seam: a multi-line completion tokenised on its own splits its first line break as the
    start of a document does ('\n', '   ', ' return'); in training it must be what the model sees
    and writes inside a document ('\n   ', ' return')."""
    row = {"prompt": "Write abs.\n### Response:\n", "completion": "def f(x):\n    return -x if x < 0 else x"}
    ids, mask = _example(tok, "prompt_completion", row)
    prompt, completion = ids[mask == 0].tolist(), ids[mask == 1][:-1].tolist()
    assert prompt == tok(row["prompt"])["input_ids"]  # the prompt exactly as the model gets it at inference
    assert completion == _in_document(tok, row["completion"])
    assert completion != tok(row["completion"])["input_ids"]  # alone it tokenises differently: the bug
    assert tok.decode(completion) == row["completion"]
    # A completion that continues the prompt's last line is cut out of prompt + completion.
    ids, mask = _example(tok, "prompt_completion", {"prompt": "def f(x):\n    return x", "completion": " + 3\n"})
    joint = tok("def f(x):\n    return x + 3\n")["input_ids"]
    assert ids[:-1].tolist() == joint and mask.sum() == len(joint) - len(tok("def f(x):\n    return x")["input_ids"]) + 1


def test_prompt_and_completion_are_tokenized_separately(tok):
    # "return" is one merged token in this vocab, so tokenizing the joined string differs:
    # separate tokenization must keep the boundary the model sees at inference time.
    row = {"prompt": "x = ret", "completion": "urn y"}
    joint = tok(row["prompt"] + row["completion"])["input_ids"]
    separate = tok(row["prompt"])["input_ids"] + tok(row["completion"])["input_ids"]
    assert joint != separate
    ids, mask = _example(tok, "prompt_completion", row)
    assert ids.tolist() == separate + [tok.eos_token_id]
    n_prompt = len(tok(row["prompt"])["input_ids"])
    assert mask.tolist() == [0] * n_prompt + [1] * (len(ids) - n_prompt)


def test_alpaca_no_input_template_and_missing_input(tok):
    row = {"instruction": "Say hi.", "output": "print('hi')"}
    ids, mask = _example(tok, "alpaca", row)
    assert tok.decode(ids[mask == 0]) == ALPACA_PROMPT_NO_INPUT.format(instruction="Say hi.")
    assert "### Input:" not in tok.decode(ids)
    same, _ = _example(tok, "alpaca", dict(row, input=""))
    assert same.tolist() == ids.tolist()


def test_custom_prompt_templates(tok):
    ids, mask = _example(tok, "alpaca", LCS, prompt_template="Q: {instruction}\n{input}\nA:")
    assert tok.decode(ids[mask == 0]) == f"Q: {LCS['instruction']}\n{LCS['input']}\nA:"
    ids, mask = _example(tok, "prompt_completion", {"prompt": "2+2", "completion": "4"},
                         prompt_template="<q>{prompt}</q>")
    assert tok.decode(ids[mask == 0]) == "<q>2+2</q>"


@pytest.mark.parametrize("fmt, template, match", [
    ("alpaca", "{instruction} {output}", "must be a str.format string"),
    ("alpaca", "no fields at all", "uses none of"),
    ("text", "{prompt}", "only used by the alpaca and prompt_completion"),
    ("nonsense", None, "unknown data format 'nonsense'"),
])
def test_bad_format_specs(fmt, template, match):
    with pytest.raises(ValueError, match=match):
        FormatSpec(fmt, prompt_template=template)


def test_text_is_all_weighted_and_ends_with_eos(tok):
    text = "def add(a, b):\n    return a + b\n"
    ids, mask = _example(tok, "text", {"text": text})
    assert ids.tolist() == tok(text)["input_ids"] + [tok.eos_token_id]
    assert mask.all()
    content_ids, _ = _example(tok, "text", {"content": text})  # The Stack's field name
    assert content_ids.tolist() == ids.tolist()
    code_ids, _ = _example(tok, "text", {"code": text}, text_field="code")
    assert code_ids.tolist() == ids.tolist()


def test_chat_weights_only_assistant_replies_and_their_end_of_turn(tok):
    example = _example(tok, "chat", CONVERSATION)
    replies = [m["content"] for m in CONVERSATION["messages"] if m["role"] == "assistant"]
    assert _weighted_runs(tok, example) == [r + IM_END for r in replies]
    # System, user and tool text never appears in a weighted target.
    ids, mask = example
    unweighted = tok.decode(ids[mask == 0])
    for m in CONVERSATION["messages"]:
        if m["role"] != "assistant":
            assert m["content"] in unweighted


def test_chat_matches_the_tokenizer_chat_template(tok):
    ids, mask = _example(tok, "chat", CONVERSATION)
    ref = tok.apply_chat_template(CONVERSATION["messages"], tokenize=True, return_dict=True,
                                  return_assistant_tokens_mask=True)
    assert ids.tolist() == ref["input_ids"] and mask.tolist() == ref["assistant_masks"]


def test_chat_template_without_generation_blocks_is_a_config_error(tok):
    plain = tok.chat_template.replace("{%- generation %}", "").replace("{%- endgeneration %}", "")
    assert plain != tok.chat_template
    original = tok.chat_template
    tok.chat_template = plain
    try:
        with pytest.raises(ValueError, match=r"\{% generation %\}"):
            _example(tok, "chat", CONVERSATION)
    finally:
        tok.chat_template = original


@pytest.mark.parametrize("fmt, row, field, reason, problem", [
    ("alpaca", {"instruction": "a", "input": "", "output": 3}, "output", "wrong_type",
     "expected a non-empty string, got int"),
    ("alpaca", {"instruction": "a", "input": ""}, "output", "missing_field", "missing"),
    ("alpaca", {"instruction": "a", "input": "", "output": ""}, "output", "empty_field",
     "expected a non-empty string, got an empty string"),
    ("alpaca", {"instruction": "a", "input": None, "output": "x"}, "input", "wrong_type",
     "expected a string, got null"),
    ("prompt_completion", {"prompt": "a", "completion": ""}, "completion", "empty_field", "empty"),
    ("prompt_completion", {"completion": "b"}, "prompt", "missing_field", "missing"),
    ("text", {"text": ["a"]}, "text", "wrong_type", "got list"),
    ("text", {"body": "a"}, "text", "missing_field", "missing"),
    ("text", {"text": "caf\udce9"}, "text", "not_utf8", "not valid UTF-8"),
    ("chat", {"messages": "hi"}, "messages", "wrong_type", "expected a list of messages, got string"),
    ("chat", {"messages": ["hi"]}, "messages[0]", "wrong_type", "expected an object, got string"),
    ("chat", {"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "bad_role",
     "got 'robot'"),
    ("chat", {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]},
     "messages[1].content", "empty_field", "empty string"),
    ("chat", {"messages": [{"role": "user", "content": "x"}]}, "messages", "no_assistant_turn",
     "no assistant turn"),
    ("chat", {"messages": [{"role": "assistant"}]}, "messages[0].content", "missing_field", "missing"),
])
def test_malformed_rows_name_where_field_and_problem(fmt, row, field, reason, problem):
    with pytest.raises(DataError) as info:
        parse_row(FormatSpec(fmt), row, WHERE)
    err = info.value
    assert (err.where, err.field, err.reason) == (WHERE, field, reason)
    assert str(err).startswith(f"{WHERE}: field '{field}': ")
    assert problem in str(err)


def test_example_arrays_have_compact_dtypes(tok):
    ids, mask = _example(tok, "text", {"text": "x = 1"})
    assert ids.dtype == np.int32 and mask.dtype == np.uint8 and len(ids) == len(mask)
