"""The tool-call format of codejax's chat template (Hermes / Qwen2.5 conventions), and its parser.

A conversation with tools, as `tokenizer.apply_chat_template(messages, tools=TOOLS)` takes it:

    tools = [{"type": "function", "function": {"name": "python", "description": "...",
              "parameters": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}}}]
    messages = [
        {"role": "user", "content": "What is 3847 * 29?"},
        {"role": "assistant", "content": "", "tool_calls": [{"name": "python", "arguments": {"code": "print(3847 * 29)"}}]},
        {"role": "tool", "content": "111563"},
        {"role": "assistant", "content": "111563"},
    ]

- The schemas go in the system turn, one JSON object per line inside <tools></tools>.
- An assistant's tool call is `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>` after its
  content (a line break between them), one block per call, all inside the loss mask; the tool's
  result is a `tool` turn, outside it. `tool_calls` items may be OpenAI-shaped
  (`{"type": "function", "function": {"name", "arguments"}}`, arguments a dict or a JSON string).
- `parse_tool_calls(text)` reads a generated turn back into (content, calls, errors), so that
  `format_assistant(content, calls)` -> text -> `parse_tool_calls` round-trips exactly.

The JSON is `json.dumps(..., ensure_ascii=False)` with the default separators, which is what the
template's `tojson` (transformers' own filter) writes, so text rendered here and by the template agree.
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from codejax.data import errors
from codejax.data.errors import DataError

TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
_CALL = re.compile(re.escape(TOOL_CALL_OPEN) + r"\s*(.*?)\s*" + re.escape(TOOL_CALL_CLOSE), re.DOTALL)


def function_schema(name: str, description: str, parameters: dict[str, dict], required: list[str] | None = None) -> dict:
    """An OpenAI-style tool schema: {"type": "function", "function": {name, description, parameters}}."""
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": parameters, "required": list(required or parameters)}}}


def normalise_call(call: Any, where: str = "", field: str = "tool_call") -> dict:
    """{"name": str, "arguments": dict} from a flat or OpenAI-shaped call; a DataError names `field` otherwise."""
    if not isinstance(call, dict):
        raise DataError(where, field, f"expected an object, got {errors.json_type_name(call)}", errors.WRONG_TYPE)
    inner = call.get("function", call) if call.get("type", "function") == "function" else None
    if not isinstance(inner, dict):
        raise DataError(where, field, "expected {'name', 'arguments'} or {'type': 'function', 'function': {...}}",
                        errors.WRONG_TYPE)
    name, arguments = inner.get("name"), inner.get("arguments", {})
    if not isinstance(name, str) or not name:
        raise DataError(where, f"{field}.name", "expected a non-empty string", errors.WRONG_TYPE)
    if isinstance(arguments, str):  # OpenAI sends the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as e:
            raise DataError(where, f"{field}.arguments", f"not valid JSON: {e}", errors.WRONG_TYPE) from None
    if not isinstance(arguments, dict):
        raise DataError(where, f"{field}.arguments", f"expected an object, got {errors.json_type_name(arguments)}",
                        errors.WRONG_TYPE)
    return {"name": name, "arguments": arguments}


def check_tools(tools: Any, where: str) -> list[dict]:
    """A chat row's `tools`: a list of function schemas (each with a function name)."""
    if not isinstance(tools, list):
        raise DataError(where, "tools", f"expected a list of tool schemas, got {errors.json_type_name(tools)}",
                        errors.WRONG_TYPE)
    for i, tool in enumerate(tools):
        fn = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise DataError(where, f"tools[{i}]", "expected a schema with a function name "
                            "({'type': 'function', 'function': {'name': ..., 'parameters': ...}})", errors.WRONG_TYPE)
    return tools


def format_tool_call(name: str, arguments: dict) -> str:
    """One call as the template writes it."""
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"{TOOL_CALL_OPEN}\n{body}\n{TOOL_CALL_CLOSE}"


def format_assistant(content: str, calls: list[dict]) -> str:
    """An assistant turn's text: its content, then each call on its own lines (as the template renders it)."""
    blocks = [format_tool_call(c["name"], c["arguments"]) for c in map(normalise_call, calls)]
    return "\n".join(([content] if content else []) + blocks)


@dataclasses.dataclass
class ParsedTurn:
    content: str  # the text outside the tool-call blocks, stripped
    calls: list[dict]  # [{"name", "arguments"}], in order
    errors: list[str]  # one line per block that could not be read (told to the model as the tool's reply)


def parse_tool_calls(text: str) -> ParsedTurn:
    """The calls in a generated assistant turn. A block that is not a JSON {"name", "arguments"} object,
    or an unclosed <tool_call>, is an error line, not an exception: the policy made it, and the
    environment tells it what was wrong."""
    calls, problems = [], []
    for i, match in enumerate(_CALL.finditer(text)):
        try:
            calls.append(normalise_call(json.loads(match.group(1)), field=f"tool call {i + 1}"))
        except json.JSONDecodeError as e:
            problems.append(f"tool call {i + 1} is not valid JSON ({e.msg} at character {e.pos})")
        except DataError as e:
            problems.append(f"{e.field}: {e.problem}")
    rest = _CALL.sub("", text)
    if TOOL_CALL_OPEN in rest:
        problems.append(f"a {TOOL_CALL_OPEN} block is not closed with {TOOL_CALL_CLOSE}")
        rest = rest[:rest.index(TOOL_CALL_OPEN)]
    return ParsedTurn(rest.strip(), calls, problems)
