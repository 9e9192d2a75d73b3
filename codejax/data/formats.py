"""Turn rows into token ids plus a 0/1 loss mask, one format at a time.

Work is split in two steps so that all checking happens before any tokenizing, and so that
tokenizing runs as one fast batched call per chunk of rows:

1. :func:`parse_row` checks one row's fields and returns plain strings (or messages), or
   raises :class:`DataError` naming the row and field.
2. :func:`tokenize_parsed` tokenizes a list of parsed rows and returns ``(ids, mask)`` pairs.

Formats and their loss masks:

* ``text``: ``{<text_field>: str}`` (default field ``"text"``; when that default is absent a
  ``"content"`` field is used, as in The Stack). ids = text + eos, mask all ones.
* ``alpaca``: ``{"instruction": str, "input": str, "output": str}``. A missing ``input`` is
  read as ``""`` (many Alpaca-style sets omit it). The prompt is :data:`ALPACA_PROMPT` (or
  :data:`ALPACA_PROMPT_NO_INPUT` when input is empty), or ``prompt_template`` when given.
* ``prompt_completion``: ``{"prompt": str, "completion": str}``; the prompt may be empty.
  ``prompt_template``, when given, is formatted with ``{prompt}``.
* ``chat``: ``{"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": str}]}``
  rendered by the tokenizer's chat template; only ``role``, ``content`` and an assistant's
  ``tool_calls`` are passed on. A row may carry ``tools`` (function schemas): the template puts
  them in the system turn, and an assistant turn may then be tool calls alone (empty content).
  codejax/data/tools.py has the format; the loss mask covers the assistant's calls, never the
  ``tool`` turns that hold their results.

For alpaca and prompt_completion the prompt is tokenized on its own (what the model is given at
inference) and the completion in context (`encode_completions`: cut out of prompt + completion
when no token spans the seam, else tokenized as at a line start inside a document), so no BPE
merge straddles the boundary and the completion tokens are those the model writes after the
prompt, not the start-of-document split of a text tokenized alone. A BOS, if the tokenizer has
one, appears once at the start. The mask is 0 on the prompt and 1 on the completion *and* on
the appended eos: the model must learn to stop. Chat masks come from the template's
``{% generation %}`` blocks (``assistant_masks``), which in codejax's ChatML cover each
assistant reply and its ``<|im_end|>``. Masks are never derived from ``id != pad_id``: pad and
eos share an id, and that test would hide every real eos from the loss.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from codejax.data import errors
from codejax.data.errors import DataError
from codejax.data.tools import check_tools, normalise_call

FORMATS = ("text", "alpaca", "prompt_completion", "chat")
CHAT_ROLES = ("system", "user", "assistant", "tool")

# The Stanford Alpaca prompts (Taori et al., 2023), verbatim, as format strings.
ALPACA_PROMPT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")

def alpaca_prompt(instruction: str, inp: str = "", template: str | None = None) -> str:
    """The prompt of an Alpaca row: `template`, else ALPACA_PROMPT (ALPACA_PROMPT_NO_INPUT when input is empty)."""
    return (template or (ALPACA_PROMPT if inp else ALPACA_PROMPT_NO_INPUT)).format(instruction=instruction, input=inp)


class Chat(NamedTuple):
    """A parsed chat row: its messages and the tool schemas it offers (None: no tools)."""

    messages: list[dict]
    tools: list[dict] | None = None


# What a parsed row is, per format: text -> str, alpaca/prompt_completion -> (prompt,
# completion), chat -> Chat.
Parsed = "str | tuple[str, str] | Chat"
Example = tuple[np.ndarray, np.ndarray]  # (int32 ids, uint8 mask), same length


@dataclasses.dataclass(frozen=True)
class FormatSpec:
    """Which format to read and how; validated on construction so typos fail at build time.

    ``prompt_template`` is a ``str.format`` string (literal braces doubled, ``{{``): with
    ``{instruction}`` and ``{input}`` for alpaca (then used whether or not input is empty), or
    with ``{prompt}`` for prompt_completion.
    """

    fmt: str
    text_field: str = "text"
    prompt_template: str | None = None

    def __post_init__(self):
        if self.fmt not in FORMATS:
            raise ValueError(f"unknown data format {self.fmt!r}; expected one of {FORMATS}")
        if self.prompt_template is None:
            return
        fields = {"alpaca": ("instruction", "input"), "prompt_completion": ("prompt",)}.get(self.fmt)
        if fields is None:
            raise ValueError(f"prompt_template is only used by the alpaca and prompt_completion "
                             f"formats, not {self.fmt!r}")
        try:
            self.prompt_template.format(**{f: "" for f in fields})
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"prompt_template for {self.fmt!r} must be a str.format string "
                             f"using only {{{'}, {'.join(fields)}}}: {e!r}") from None
        if not any(f"{{{f}}}" in self.prompt_template for f in fields):
            raise ValueError(f"prompt_template for {self.fmt!r} uses none of {fields}")


def require_string(row: dict, field: str, where: str, *, allow_empty: bool = False,
                   path: str | None = None) -> str:
    """``row[field]`` if it is a (non-empty) valid-UTF-8 string, else a DataError.

    ``path`` is the name used in messages when ``field`` sits inside a list
    (``"messages[2].content"``). Lone surrogates are how the JSON reader carries bytes that
    were not UTF-8; they are rejected here, where the field is known.
    """
    name = path or field
    if field not in row:
        raise DataError(where, name, "missing", errors.MISSING_FIELD)
    value = row[field]
    expected = "a string" if allow_empty else "a non-empty string"
    if not isinstance(value, str):
        raise DataError(where, name, f"expected {expected}, got {errors.json_type_name(value)}",
                        errors.WRONG_TYPE)
    if not value and not allow_empty:
        raise DataError(where, name, f"expected {expected}, got an empty string",
                        errors.EMPTY_FIELD)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(where, name, f"contains bytes that are not valid UTF-8 (character "
                        f"{e.start})", errors.NOT_UTF8) from None
    return value


# The field that marks a row of each format, to name the right data.format when a row does not fit.
FORMAT_MARKERS = (("messages", "chat"), ("instruction", "alpaca"), ("completion", "prompt_completion"),
                  ("text", "text"), ("content", "text"))


def parse_row(spec: FormatSpec, row: dict, where: str) -> Parsed:
    """Check ``row`` against ``spec.fmt`` and return the strings to tokenize."""
    try:
        return _parse_row(spec, row, where)
    except DataError as e:
        marker = next(((key, fmt) for key, fmt in FORMAT_MARKERS if key in row and fmt != spec.fmt), None)
        if e.reason != errors.MISSING_FIELD or marker is None:
            raise
        raise DataError(where, e.field, f"{e.problem} (data.format={spec.fmt!r}, but the row has {marker[0]!r}: "
                        f"use data.format={marker[1]})", e.reason) from None


def _parse_row(spec: FormatSpec, row: dict, where: str) -> Parsed:
    if spec.fmt == "text":
        field = spec.text_field
        if field not in row and field == "text" and "content" in row:
            field = "content"
        return require_string(row, field, where)
    if spec.fmt == "alpaca":
        instruction = require_string(row, "instruction", where)
        inp = require_string(row, "input", where, allow_empty=True) if "input" in row else ""
        output = require_string(row, "output", where)
        return alpaca_prompt(instruction, inp, spec.prompt_template), output
    if spec.fmt == "prompt_completion":
        prompt = require_string(row, "prompt", where, allow_empty=True)
        completion = require_string(row, "completion", where)
        if spec.prompt_template is not None:
            prompt = spec.prompt_template.format(prompt=prompt)
        return prompt, completion
    return Chat(parse_messages(row, where), check_tools(row["tools"], where) if row.get("tools") else None)


def parse_messages(row: dict, where: str) -> list[dict[str, str]]:
    """Check a chat row; it must hold at least one non-empty assistant turn to learn from."""
    if "messages" not in row:
        raise DataError(where, "messages", "missing", errors.MISSING_FIELD)
    messages = row["messages"]
    if not isinstance(messages, list):
        raise DataError(where, "messages", "expected a list of messages, got "
                        f"{errors.json_type_name(messages)}", errors.WRONG_TYPE)
    parsed = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise DataError(where, f"messages[{i}]", "expected an object, got "
                            f"{errors.json_type_name(message)}", errors.WRONG_TYPE)
        role = require_string(message, "role", where, path=f"messages[{i}].role")
        if role not in CHAT_ROLES:
            raise DataError(where, f"messages[{i}].role", f"expected one of {list(CHAT_ROLES)}, "
                            f"got {role!r}", errors.BAD_ROLE)
        calls = message.get("tool_calls") or []
        if role != "assistant" and calls:
            raise DataError(where, f"messages[{i}].tool_calls", f"only assistant turns make tool calls, not {role!r}",
                            errors.WRONG_TYPE)
        if not isinstance(calls, list):
            raise DataError(where, f"messages[{i}].tool_calls", "expected a list of calls, got "
                            f"{errors.json_type_name(calls)}", errors.WRONG_TYPE)
        content = require_string(message, "content", where, allow_empty=role != "assistant" or bool(calls),
                                 path=f"messages[{i}].content")
        parsed.append({"role": role, "content": content})
        if calls:
            parsed[-1]["tool_calls"] = [normalise_call(c, where, f"messages[{i}].tool_calls[{j}]")
                                        for j, c in enumerate(calls)]
    if not any(m["role"] == "assistant" for m in parsed):
        raise DataError(where, "messages", "no assistant turn, so nothing to train on",
                        errors.NO_ASSISTANT_TURN)
    return parsed


def encode_texts(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Batch-encode without the tokenizer's own specials (we place BOS/EOS ourselves)."""
    if not texts:
        return []
    # verbose=False: long documents are expected here (fit_to_seq_len handles them), so the
    # "longer than model_max_length" warning would only be noise.
    return tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]


def encode_completions(tokenizer, prompts: Sequence[str], completions: Sequence[str],
                       prompt_ids: Sequence[list[int]]) -> list[list[int]]:
    """Each completion's ids as it tokenises in context, after its prompt's own ids.

    The prompt is always encoded on its own (`prompt_ids`): that is what the model is given at
    inference. A completion encoded on its own would tokenise as the start of a document, which
    can differ from how the same text tokenises inside one (codejax's tokenizer isolates a text's
    first line, so `):\n    return` splits as '\n', '   ', ' return' instead of '\n   ', ' return';
    SentencePiece adds a prefix space). So the completion is cut out of a joint encoding:
    1. prompt + completion, when its ids start with the prompt's ids (no token spans the seam);
    2. else "\n" + completion the same way: the completion as it tokenises at a line start
       inside a document;
    3. else (both merge across the seam) the completion on its own.
    """
    n = len(completions)
    out: list[list[int] | None] = [None] * n
    newline = encode_texts(tokenizer, ["\n"])[0]
    for anchors, anchor_ids in ((prompts, prompt_ids), (["\n"] * n, [newline] * n)):
        todo = [i for i in range(n) if out[i] is None]
        if not todo:
            break
        joint = encode_texts(tokenizer, [anchors[i] + completions[i] for i in todo])
        for i, ids in zip(todo, joint):
            head = anchor_ids[i]
            if ids[:len(head)] == head and len(ids) > len(head):
                out[i] = ids[len(head):]
    rest = [i for i in range(n) if out[i] is None]
    for i, ids in zip(rest, encode_texts(tokenizer, [completions[i] for i in rest])):
        out[i] = ids
    return out


def _example(ids: list[int], mask: list[int]) -> Example:
    return np.asarray(ids, dtype=np.int32), np.asarray(mask, dtype=np.uint8)


def tokenize_parsed(spec: FormatSpec, tokenizer, parsed: Sequence[Parsed]) -> list[Example]:
    """Tokenize parsed rows of ``spec.fmt`` into ``(ids, mask)`` examples (see module doc)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id; every example must end with one")
    bos = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    if spec.fmt == "text":
        return [_example(bos + ids + [eos], [1] * (len(bos) + len(ids) + 1))
                for ids in encode_texts(tokenizer, parsed)]
    if spec.fmt in ("alpaca", "prompt_completion"):
        prompts = encode_texts(tokenizer, [p for p, _ in parsed])
        completions = encode_completions(tokenizer, [p for p, _ in parsed], [c for _, c in parsed], prompts)
        return [_example(bos + p + c + [eos], [0] * (len(bos) + len(p)) + [1] * (len(c) + 1))
                for p, c in zip(prompts, completions)]
    return _tokenize_chats(tokenizer, parsed)


def _tokenize_chats(tokenizer, chats: Sequence[Chat]) -> list[Example]:
    """One apply_chat_template call per distinct tool set (the template takes one per call)."""
    groups: dict[str, list[int]] = {}
    for i, chat in enumerate(chats):  # keyed by the JSON as written: key order shows in the rendered schema
        groups.setdefault(json.dumps(chat.tools), []).append(i)
    examples: list[Example | None] = [None] * len(chats)
    for rows in groups.values():
        out = tokenizer.apply_chat_template([chats[i].messages for i in rows], tools=chats[rows[0]].tools, tokenize=True,
                                            return_dict=True, return_assistant_tokens_mask=True)
        for i, ids, mask in zip(rows, out["input_ids"], out["assistant_masks"]):
            examples[i] = _example(ids, mask)
    for _, mask in examples:
        if not mask.any():
            # parse_messages guarantees a non-empty assistant turn, so this is the template.
            raise ValueError("the tokenizer's chat template marks no assistant tokens; it needs "
                             "{% generation %} blocks around assistant replies for loss masks")
    return examples
