"""The tool-call chat format: the template renders tools and calls as codejax/data/tools.py writes them, parsing
round-trips, chat rows with tools tokenize with a loss mask on the assistant's tokens only."""
import json

import pytest
import transformers

from codejax.data import DataError
from codejax.data.formats import FormatSpec, parse_row, tokenize_parsed
from codejax.data.tools import format_assistant, format_tool_call, function_schema, parse_tool_calls

TOOLS = [function_schema("python", "Run Python code.", {"code": {"type": "string"}}),
         function_schema("search", "Search the docs.", {"query": {"type": "string"}})]
CALL = {"name": "python", "arguments": {"code": "print(3 * 4)"}}
MESSAGES = [
    {"role": "system", "content": "You are careful."},
    {"role": "user", "content": "What is 3 * 4? Then look up print."},
    {"role": "assistant", "content": "I will compute it.", "tool_calls": [CALL]},
    {"role": "tool", "content": "12"},
    {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
        "name": "search", "arguments": json.dumps({"query": "print ü"}, ensure_ascii=False)}}]},
    {"role": "tool", "content": "print(*objects)"},
    {"role": "assistant", "content": "12"},
]


@pytest.fixture(scope="module")
def tok(chat_tokenizer_dir):
    return transformers.AutoTokenizer.from_pretrained(chat_tokenizer_dir)


def test_template_renders_tools_in_the_system_turn_and_calls_as_the_format_module_writes_them(tok):
    text = tok.apply_chat_template(MESSAGES, tools=TOOLS, tokenize=False)
    system = text.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\nYou are careful.\n\n# Tools")
    for tool in TOOLS:
        assert "\n" + json.dumps(tool, ensure_ascii=False) + "\n" in system
    assert text.count("<|im_start|>system") == 1  # the given system message is merged, not repeated
    assert ("<|im_start|>assistant\n" + format_assistant("I will compute it.", [CALL]) + "<|im_end|>") in text
    # OpenAI-shaped, arguments as a JSON string (written verbatim): the same block as the flat form
    assert format_tool_call("search", {"query": "print ü"}) + "<|im_end|>" in text
    assert "<|im_start|>tool\n12<|im_end|>" in text


def test_without_tools_the_template_is_unchanged(tok):
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "u"},
                {"role": "assistant", "content": "a"}]
    assert tok.apply_chat_template(messages, tokenize=False) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nu<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n")


def test_parsing_round_trips_and_reports_bad_blocks():
    calls = [CALL, {"name": "search", "arguments": {"query": "x\n<y>"}}]
    parsed = parse_tool_calls(format_assistant("Let me check.", calls))
    assert (parsed.content, parsed.calls, parsed.errors) == ("Let me check.", calls, [])
    bad = parse_tool_calls('<tool_call>\n{"name": "python", "arguments": {"code": 1\n</tool_call>'
                           '<tool_call>\n{"arguments": {}}\n</tool_call><tool_call>{"name": "x"')
    assert parsed.calls and not bad.calls
    assert len(bad.errors) == 3
    assert "not valid JSON" in bad.errors[0] and "name" in bad.errors[1] and "not closed" in bad.errors[2]
    assert parse_tool_calls("just an answer") .calls == []


def test_a_chat_row_with_tools_masks_the_assistant_turns_and_calls_never_the_tool_turns(tok):
    spec = FormatSpec("chat")
    [(ids, mask)] = tokenize_parsed(spec, tok, [parse_row(spec, {"messages": MESSAGES, "tools": TOOLS}, "f:1")])
    assert ids.tolist() == tok.apply_chat_template(MESSAGES, tools=TOOLS, tokenize=True, return_dict=True)["input_ids"]
    trained = tok.decode(ids[mask == 1])
    assert trained == ("I will compute it.\n" + format_tool_call(**CALL) + "<|im_end|>"
                       + format_tool_call("search", {"query": "print ü"}) + "<|im_end|>" + "12<|im_end|>")
    assert "print(*objects)" not in trained and "Run Python code." not in trained


def test_rows_with_different_tools_in_one_batch_each_get_their_own(tok):
    spec = FormatSpec("chat")
    rows = [{"messages": MESSAGES, "tools": TOOLS}, {"messages": MESSAGES[1:2] + [{"role": "assistant", "content": "a"}]},
            {"messages": MESSAGES, "tools": TOOLS[:1]}]
    examples = tokenize_parsed(spec, tok, [parse_row(spec, r, f"f:{i}") for i, r in enumerate(rows)])
    texts = [tok.decode(ids) for ids, _ in examples]
    assert "search" in texts[0].split("</tools>")[0] and "</tools>" not in texts[1]
    assert "Search the docs." not in texts[2].split("</tools>")[0]


@pytest.mark.parametrize("row,field", [
    ({"messages": [{"role": "user", "content": "u", "tool_calls": [CALL]}, {"role": "assistant", "content": "a"}]},
     "messages[0].tool_calls"),
    ({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "", "tool_calls": {"x": 1}}]},
     "messages[1].tool_calls"),
    ({"messages": [{"role": "user", "content": "u"},
                   {"role": "assistant", "content": "", "tool_calls": [{"arguments": {}}]}]},
     "messages[1].tool_calls[0].name"),
    ({"messages": [{"role": "user", "content": "u"},
                   {"role": "assistant", "content": "", "tool_calls": [{"name": "p", "arguments": "{bad"}]}]},
     "messages[1].tool_calls[0].arguments"),
    ({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": ""}]}, "messages[1].content"),
    ({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}], "tools": {"a": 1}},
     "tools"),
    ({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}], "tools": [{"x": 1}]},
     "tools[0]"),
])
def test_bad_tool_fields_name_the_row_and_field(row, field):
    with pytest.raises(DataError) as e:
        parse_row(FormatSpec("chat"), row, "data.jsonl:7")
    assert e.value.field == field and str(e.value).startswith("data.jsonl:7: field")
