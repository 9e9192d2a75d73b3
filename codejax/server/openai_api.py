"""The OpenAI request and response schema of `python -m codejax.serve`: typed fields, one-line errors
naming the field, a request's prompts and sampling settings, and the JSON of answers and stream events."""
from __future__ import annotations

import dataclasses
import json
import math
import queue
import threading
import time
import uuid
from typing import Any

# `app` below is codejax.serve.App (the served models, their tokenizer, encode()): passed in, not
# imported, since serve.py sits above this package.

DEFAULT_MAX_TOKENS = 256
MAX_N = 128  # OpenAI's own cap on n
FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}
# Fields that change what a response means: silently ignoring them would give a wrong answer.
UNSUPPORTED = ("tools", "functions", "logprobs", "top_logprobs", "echo", "suffix")


class ApiError(Exception):
    """An error answer: the HTTP status and OpenAI's error object."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


# ----------------------------------------------------------------------------- request fields

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "a list",
               dict: "an object"}


def field(body: dict, name: str, types: tuple[type, ...], default: Any = None) -> Any:
    """body[name] if it has one of `types` (None or absent = default); else a 400 naming the field."""
    value = body.get(name)
    if value is None:
        return default
    # bool is an int to Python, but `"n": true` is a client bug, not 1.
    if isinstance(value, types) and not (isinstance(value, bool) and bool not in types):
        if types == (int, float):
            check(math.isfinite(value), name, f"must be a finite number, got {value}")  # json reads NaN
            return float(value)
        return value
    wanted = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types if not (t is int and float in types))
    raise ApiError(400, f"'{name}' must be {wanted}, got {type(value).__name__} {json.dumps(value)[:40]}", param=name)


def check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ApiError(400, f"'{name}' {message}", param=name)


def stop_strings(body: dict) -> tuple[str, ...]:
    stop = field(body, "stop", (str, list), ())
    stop = [stop] if isinstance(stop, str) else stop
    check(all(isinstance(s, str) for s in stop), "stop", "must be a string or a list of strings")
    return tuple(dict.fromkeys(s for s in stop if s))  # an empty stop string would cut every completion at 0


def message_text(i: int, message: Any) -> dict:
    """One chat message as the template takes it: {role, content} with text content."""
    check(isinstance(message, dict), f"messages[{i}]", "must be an object with 'role' and 'content'")
    check(isinstance(message.get("role"), str), f"messages[{i}].role", "must be a string")
    content = message.get("content")
    if isinstance(content, list):  # OpenAI's content parts: only text ones are supported
        check(all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                  for p in content), f"messages[{i}].content", "parts must be {\"type\": \"text\", \"text\": ...}; "
                                                                "images and audio are not supported")
        content = "".join(p["text"] for p in content)
    check(content is None or isinstance(content, str), f"messages[{i}].content", "must be a string or a list of "
                                                                                  "text parts")
    return {"role": message["role"], "content": content or ""}


def token_prompts(prompt: Any) -> list[str] | list[list[int]]:
    """/v1/completions' prompt: a string, a list of strings, a list of token ids, or a list of those."""
    if isinstance(prompt, str):
        return [prompt]
    check(isinstance(prompt, list) and prompt, "prompt", "must be a string, a list of strings or token ids")
    if all(isinstance(p, str) for p in prompt):
        return list(prompt)
    if all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return [list(prompt)]
    check(all(isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) for t in p)
              for p in prompt), "prompt", "must be a string, a list of strings, a list of token ids or a list of "
                                          "token-id lists")
    return [list(p) for p in prompt]


@dataclasses.dataclass(frozen=True)
class GroupKey:
    """What one `generate` call shares: requests batch together only when these agree."""

    model: str
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    stop: tuple[str, ...]
    eos: tuple[int, ...]


@dataclasses.dataclass(eq=False)
class Job:
    """One HTTP request's generation work; the scheduler answers on `events`."""

    key: GroupKey
    prompts: list[list[int]]
    n: int = 1
    seed: int | None = None
    stream: bool = False
    events: queue.Queue = dataclasses.field(default_factory=queue.Queue)
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)
    arrived: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def rows(self) -> int:
        return len(self.prompts) * self.n


@dataclasses.dataclass
class Call:
    """A parsed completion request: the job, and what the response needs."""

    kind: str  # "chat" | "completion"
    model: str
    job: Job
    include_usage: bool = False
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:24])
    created: int = dataclasses.field(default_factory=lambda: int(time.time()))


def parse_call(body: Any, kind: str, app) -> Call:
    """A request body -> Call, or an ApiError naming the first bad field."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    check_supported(body)
    name = model_name(body, app.served)
    prompts, requested = chat_prompts(body, app, name) if kind == "chat" else completion_prompts(body, app)
    max_tokens = fit_max_tokens(requested, max(map(len, prompts)), app.served.max_len)
    n = field(body, "n", (int,), 1)
    check(1 <= n and n * len(prompts) <= MAX_N, "n", f"times the number of prompts must be in [1, {MAX_N}], got "
                                                      f"{n} x {len(prompts)}")
    temperature, top_p, top_k = sampling_fields(body, app.vocab_size)
    eos = app.no_eos if field(body, "ignore_eos", (bool,), False) else app.eos[(name, kind)]
    key = GroupKey(name, max_tokens, temperature, top_p, top_k, stop_strings(body), eos)
    job = Job(key, prompts, n, field(body, "seed", (int,), None), field(body, "stream", (bool,), False))
    options = field(body, "stream_options", (dict,), {})
    return Call(kind, name, job, include_usage=bool(options.get("include_usage")))


def check_supported(body: dict) -> None:
    for name in UNSUPPORTED:
        check(not body.get(name), name, "is not supported by codejax.serve")
    response_format = field(body, "response_format", (dict,), {})
    check(response_format.get("type", "text") == "text", "response_format", "only {\"type\": \"text\"} is supported")


def model_name(body: dict, served) -> str:
    name = field(body, "model", (str,), served.base_name)  # absent: the base (curl users rarely name it)
    if name not in served.models:
        raise ApiError(404, f"the model {name!r} is not served here; served models: {', '.join(served.names)}",
                       param="model", code="model_not_found")
    return name


def chat_prompts(body: dict, app, name: str) -> tuple[list[list[int]], int | None]:
    """The rendered conversation's token ids, and the requested completion budget."""
    messages = field(body, "messages", (list,))
    check(bool(messages), "messages", "is required: a non-empty list of {role, content} objects")
    if not getattr(app.served.tokenizer, "chat_template", None):
        raise ApiError(400, f"the tokenizer of {name!r} has no chat template; send a plain prompt to "
                            "/v1/completions instead", param="messages")
    messages = [message_text(i, m) for i, m in enumerate(messages)]
    try:
        text = app.served.chat_prompt(messages)
    except Exception as e:  # noqa: BLE001 - the template's own complaint (an unknown role, ...)
        raise ApiError(400, f"the chat template rejected the messages: {e}", param="messages") from None
    requested = field(body, "max_completion_tokens", (int,), None)  # the newer name wins
    return app.encode([text], "chat"), field(body, "max_tokens", (int,), None) if requested is None else requested


def completion_prompts(body: dict, app) -> tuple[list[list[int]], int | None]:
    check(body.get("prompt") is not None, "prompt", "is required: a string or a list of strings")
    prompts = app.encode(token_prompts(body["prompt"]), "completion")
    for i, ids in enumerate(prompts):
        check(len(ids) > 0, "prompt", f"number {i} is empty (no tokens)")
        bad = [t for t in ids if not 0 <= t < app.vocab_size]
        check(not bad, "prompt", f"has token ids outside the vocabulary [0, {app.vocab_size}): {bad[:5]}")
    return prompts, field(body, "max_tokens", (int,), None)


def sampling_fields(body: dict, vocab_size: int) -> tuple[float, float, int]:
    """(temperature, top_p, top_k), OpenAI's defaults: temperature 1, no top-p or top-k cut."""
    temperature = field(body, "temperature", (int, float), 1.0)
    check(temperature >= 0, "temperature", f"must be >= 0 (0 = greedy), got {temperature}")
    top_p = field(body, "top_p", (int, float), 1.0)
    check(0 < top_p <= 1, "top_p", f"must be in (0, 1], got {top_p}")
    top_k = field(body, "top_k", (int,), 0)
    check(top_k >= -1, "top_k", f"must be >= 0 (0 or -1 = off), got {top_k}")
    return temperature, top_p, 0 if top_k < 0 or top_k >= vocab_size else top_k  # k >= vocab keeps every token


def fit_max_tokens(requested: int | None, prompt_len: int, max_len: int) -> int:
    """The completion budget: the request's, checked against the context, or the default cut to fit."""
    if requested is not None and requested < 1:
        raise ApiError(400, f"'max_tokens' must be >= 1, got {requested}", param="max_tokens")
    budget = DEFAULT_MAX_TOKENS if requested is None else requested
    if requested is None:
        budget = min(budget, max_len - prompt_len)
    if budget < 1 or prompt_len + budget > max_len:
        raise ApiError(400, f"this model's maximum context length is {max_len} tokens, but the prompt has "
                            f"{prompt_len} tokens and max_tokens is {max(budget, 1)} ({prompt_len + max(budget, 1)} in "
                            "all); shorten the prompt or lower max_tokens", param="max_tokens",
                       code="context_length_exceeded")
    return budget


# ----------------------------------------------------------------------------- responses

def usage(prompt_tokens: int, choices: list[dict]) -> dict:
    completion = sum(c["tokens"] for c in choices)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}


def response(call: Call, choices: list[dict], prompt_tokens: int) -> dict:
    if call.kind == "chat":
        body = [{"index": c["index"], "message": {"role": "assistant", "content": c["text"]}, "logprobs": None,
                 "finish_reason": c["finish_reason"]} for c in choices]
        return {"id": f"chatcmpl-{call.id}", "object": "chat.completion", "created": call.created,
                "model": call.model, "choices": body, "usage": usage(prompt_tokens, choices)}
    body = [{"index": c["index"], "text": c["text"], "logprobs": None, "finish_reason": c["finish_reason"]}
            for c in choices]
    return {"id": f"cmpl-{call.id}", "object": "text_completion", "created": call.created, "model": call.model,
            "choices": body, "usage": usage(prompt_tokens, choices)}


def chunk(call: Call, index: int, text: str | None = None, finish_reason: str | None = None, *,
          role: bool = False) -> dict:
    """One streamed event: a role announcement, a text piece, or a choice's finish."""
    if call.kind == "chat":
        delta = {"role": "assistant", "content": ""} if role else {} if text is None else {"content": text}
        return {"id": f"chatcmpl-{call.id}", "object": "chat.completion.chunk", "created": call.created,
                "model": call.model, "choices": [{"index": index, "delta": delta, "logprobs": None,
                                                  "finish_reason": finish_reason}]}
    return {"id": f"cmpl-{call.id}", "object": "text_completion", "created": call.created, "model": call.model,
            "choices": [{"index": index, "text": text or "", "logprobs": None, "finish_reason": finish_reason}]}
