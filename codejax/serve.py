"""`python -m codejax.serve`: an OpenAI-compatible HTTP server over codejax's batched sampler.

    python -m codejax.serve --model /models/qwen2.5-coder-1.5b --adapter sql=/runs/sql_lora --port 8000
    python -m codejax.serve --model /runs/sft                  # a training workdir: its latest checkpoint

It prints `codejax.serve: listening on http://HOST:PORT` once the model is loaded (`--port 0`
picks a free port; the line gives the real one) and stops cleanly on SIGINT or SIGTERM.

    curl http://127.0.0.1:8000/v1/models
    curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
        -d '{"model": "qwen2.5-coder-1.5b", "messages": [{"role": "user", "content": "Write fizzbuzz."}],
             "max_tokens": 128, "temperature": 0}'
    curl -N http://127.0.0.1:8000/v1/completions -d '{"model": "sql", "prompt": "SELECT", "stream": true}'

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="x")   # any key, unless --api_key is set
    client.chat.completions.create(model="sql", messages=[{"role": "user", "content": "..."}]).choices[0]
    for chunk in client.completions.create(model="qwen2.5-coder-1.5b", prompt="def f(", stream=True): ...

Endpoints: GET /v1/models (and /v1/models/NAME), POST /v1/chat/completions (messages rendered
by the tokenizer's chat template; generation ends at EOS or the template's end-of-turn token),
POST /v1/completions (prompt: a string, a list of strings, or token ids), GET /health (the
served names and the scheduler's counters: batches, rows, largest batch, failures). Request
fields: model, max_tokens (chat: also max_completion_tokens; default 256, or what fits the
context), temperature (default 1.0, 0 = greedy), top_p, n, stop (a string or a list), seed, stream
(with stream_options.include_usage), and vLLM's extensions top_k and ignore_eos (always generate
max_tokens tokens). Other fields are ignored.

Batching: the HTTP threads only parse and answer; one scheduler thread runs the model. It
collects queued requests until none has arrived for --batch_wait_ms (at most 4x that in all) or
--max_batch rows are queued (n samples of a request are n rows), groups them by what the sampler compiles for or applies to the whole batch
(model, max_tokens, temperature, top_p, top_k, stop strings, EOS set) and runs one `generate`
per group, oldest request first. Batches are padded to a power of two rows so few shapes
compile. Streaming is real: text goes out after every decode chunk (--chunk_size steps), minus
a trailing partial character and the last len(longest stop) - 1 characters, which a later token
could still turn into a stop string. A batch has one seed: a request's `seed` makes it
reproducible only when it runs alone (the same seed in another batch, or another batch size,
samples differently).

Errors are OpenAI-style JSON, {"error": {"message", "type", "param", "code"}}: 400 for a body
that is not JSON (with the line and column), a missing or wrongly typed field (named), or a
prompt plus max_tokens longer than the model's context (code context_length_exceeded, both
numbers); 401 without the --api_key bearer token; 404 for an unknown model (listing the served
ones) or path; 405 for a wrong method; 411 for a chunked request body, 413 for one over 8 MiB;
500 for a generation that failed (the batch's requests get the error; the server goes on);
503 while shutting down. A client that disconnects mid-stream is logged in one line and dropped;
its batch finishes for the others.

Limits: no tool calls or function calling, no logprobs, echo or suffix (requests asking for them
get a 400), one process on the devices load_model shards over, and each adapter is a separate
set of variables (the base is shared, see codejax/setup/serving.py). The key of --api_key (or
$CODEJAX_SERVE_API_KEY) is never logged or printed.
"""
from __future__ import annotations

import argparse
import dataclasses
import hmac
import http.server
import json
import logging
import math
import os
import queue
import random
import signal
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from typing import Any

from codejax.config import base_config
from codejax.evaluation.sampling import encode_prompts, eos_ids
from codejax.generate import SamplingParams, generate
from codejax.generate.sampler import _cut_at_stop
from codejax.setup.serving import load_served

log = logging.getLogger("codejax.serve")

DEFAULT_MAX_TOKENS = 256
MAX_BODY_BYTES = 8 * 2**20
MAX_N = 128  # OpenAI's own cap on n
FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}
# Fields that change what a response means: silently ignoring them would give a wrong answer.
UNSUPPORTED = ("tools", "functions", "logprobs", "top_logprobs", "echo", "suffix")
API_KEY_ENV = "CODEJAX_SERVE_API_KEY"
_DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout)


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


def parse_call(body: Any, kind: str, app: "App") -> Call:
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


def chat_prompts(body: dict, app: "App", name: str) -> tuple[list[list[int]], int | None]:
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


def completion_prompts(body: dict, app: "App") -> tuple[list[list[int]], int | None]:
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


# ----------------------------------------------------------------------------- scheduling

def take_batch(backlog: list[Job], max_batch: int) -> tuple[list[Job], list[Job]]:
    """(the next batch, the rest): the oldest job's group, in arrival order, while the rows fit max_batch.
    The oldest job always goes, even when it alone has more rows."""
    key, batch, rest, rows = backlog[0].key, [], [], 0
    for job in backlog:
        if job.key == key and (not batch or rows + job.rows <= max_batch):
            batch.append(job)
            rows += job.rows
        else:
            rest.append(job)
    return batch, rest


def window_close(opened: float, last_arrival: float, wait_s: float) -> float:
    """When a batch stops waiting for more requests: `wait_s` after the latest one arrived, at most
    4 * wait_s after the window opened. It opens when the oldest request arrived or, if later, when the
    last batch finished. Under load the clients a batch just answered send their next requests one by
    one over a few milliseconds; starting at once with the requests queued meanwhile would split the
    clients into two half-size batches taking turns."""
    return min(opened + 4 * wait_s, max(opened, last_arrival) + wait_s)


def padded_rows(n: int) -> int:
    """Rows a batch of n is padded to: the next power of two, so at most log2(max_batch) + 1 shapes compile."""
    return 1 << max(0, n - 1).bit_length()


def batch_seed(jobs: list[Job], rng: random.Random) -> int:
    """A lone request's seed makes it reproducible; a shared batch draws its own."""
    if len(jobs) == 1 and jobs[0].seed is not None:
        return jobs[0].seed % 2**31
    return rng.randrange(2**31)


def streamable(text: str, stops: tuple[str, ...]) -> str:
    """What of a growing completion can be sent now: the text before a stop string once one appears;
    until then without a trailing partial character (U+FFFD: a multi-byte character split across
    tokens) and without the last len(longest stop) - 1 characters, which may become a stop string."""
    cut, hit = _cut_at_stop(text, stops)
    if hit:
        return cut
    text = text.rstrip("\ufffd")
    hold = max(map(len, stops), default=1) - 1
    return text[:max(0, len(text) - hold)]


class RowStream:
    """One streamed choice: the text sent so far, advanced only by extensions of it."""

    def __init__(self, job: Job, index: int):
        self.job, self.index, self.sent, self.seen = job, index, "", 0

    def advance(self, text: str) -> None:
        # A decode that rewrote earlier text (rare tokenizer clean-ups) cannot be taken back: wait for more.
        if len(text) > len(self.sent) and text.startswith(self.sent):
            piece, self.sent = text[len(self.sent):], text
            self.job.events.put(("delta", self.index, piece))


class Stats:
    """The scheduler's counters, read by GET /health from the HTTP threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self.values = {"requests": 0, "batches": 0, "rows": 0, "padded_rows": 0, "max_rows_per_batch": 0,
                       "failed_batches": 0, "rows_per_batch": {}}

    def batch(self, jobs: int, rows: int, padded: int) -> None:
        with self._lock:
            v = self.values
            v["requests"] += jobs
            v["batches"] += 1
            v["rows"] += rows
            v["padded_rows"] += padded
            v["max_rows_per_batch"] = max(v["max_rows_per_batch"], rows)
            v["rows_per_batch"][str(rows)] = v["rows_per_batch"].get(str(rows), 0) + 1

    def failed(self) -> None:
        with self._lock:
            self.values["failed_batches"] += 1

    def snapshot(self) -> dict:
        with self._lock:
            return json.loads(json.dumps(self.values))


class Scheduler:
    """The one thread that runs the model: collects jobs, batches them, answers on each job's events."""

    def __init__(self, served, *, max_batch: int, batch_wait_s: float, chunk_size: int):
        self.served, self.max_batch, self.batch_wait_s, self.chunk_size = served, max_batch, batch_wait_s, chunk_size
        self.inbox: queue.Queue[Job] = queue.Queue()
        self.stats = Stats()
        self.stopping = threading.Event()
        self.rng = random.Random()
        self.free_since = 0.0  # when the last batch finished
        self.thread = threading.Thread(target=self._loop, name="codejax-serve-scheduler", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def submit(self, job: Job) -> None:
        if self.stopping.is_set():
            raise ApiError(503, "the server is shutting down", kind="server_error")
        self.inbox.put(job)

    def stop(self, timeout_s: float = 30.0) -> None:
        self.stopping.set()
        self.thread.join(timeout_s)
        while True:  # whatever never ran is answered, not left waiting
            try:
                self.inbox.get_nowait().events.put(("error", 503, "the server is shutting down"))
            except queue.Empty:
                return

    def _collect(self, backlog: list[Job]) -> list[Job]:
        """Take in what arrives until the batching window closes (window_close) or the batch is full."""
        while True:
            try:
                backlog.append(self.inbox.get_nowait())
            except queue.Empty:
                break
        while backlog:
            first = backlog[0]
            group = [j for j in backlog if j.key == first.key]
            close = window_close(max(first.arrived, self.free_since), group[-1].arrived, self.batch_wait_s)
            remaining = close - time.monotonic()
            if remaining <= 0 or sum(j.rows for j in group) >= self.max_batch:
                break
            try:
                backlog.append(self.inbox.get(timeout=remaining))
            except queue.Empty:
                break
        return backlog

    def _loop(self) -> None:
        backlog: list[Job] = []
        while not self.stopping.is_set():
            if not backlog:
                try:
                    backlog.append(self.inbox.get(timeout=0.2))
                except queue.Empty:
                    continue
            backlog = [j for j in self._collect(backlog) if not j.cancelled.is_set()]
            if not backlog:
                continue
            batch, backlog = take_batch(backlog, self.max_batch)
            self.run_batch(batch)
            self.free_since = time.monotonic()
        for job in backlog:
            job.events.put(("error", 503, "the server is shutting down"))

    def run_batch(self, jobs: list[Job]) -> None:
        """One generate() for `jobs` (one group); every job gets its deltas and then "done" or "error"."""
        key = jobs[0].key
        model, variables = self.served.models[key.model]
        tokenizer = self.served.tokenizer
        rows = [(job, i * job.n + j, ids) for job in jobs for i, ids in enumerate(job.prompts) for j in range(job.n)]
        size = padded_rows(len(rows))
        prompts = [ids for _, _, ids in rows] + [rows[-1][2]] * (size - len(rows))  # padding rows are discarded
        params = SamplingParams(max_new_tokens=key.max_tokens, temperature=key.temperature, top_k=key.top_k,
                                top_p=key.top_p, stop=key.stop, eos_ids=key.eos, chunk_size=self.chunk_size,
                                seed=batch_seed(jobs, self.rng))
        streams = {r: RowStream(job, index) for r, (job, index, _) in enumerate(rows) if job.stream}
        eos = set(key.eos)

        def on_chunk(tokens, lengths):
            for r, s in streams.items():
                if s.job.cancelled.is_set() or lengths[r] == s.seen:
                    continue
                s.seen = int(lengths[r])
                text = tokenizer.decode([t for t in tokens[r, :s.seen].tolist() if t not in eos],
                                        skip_special_tokens=True)
                s.advance(streamable(text, key.stop))

        start = time.monotonic()
        try:
            out = generate(model, variables, tokenizer, prompts, params, on_chunk=on_chunk if streams else None)
        except Exception as e:  # noqa: BLE001 - the batch's requests get the error; the server goes on
            log.exception("generation failed for a batch of %d rows (%s)", len(rows), key.model)
            self.stats.failed()
            for job in jobs:
                job.events.put(("error", 500, f"generation failed: {type(e).__name__}: {e}"))
            return
        self.stats.batch(len(jobs), len(rows), size)
        log.info("batch: %d requests, %d rows (padded to %d), %s, max_tokens %d: %.2fs", len(jobs), len(rows), size,
                 key.model, key.max_tokens, time.monotonic() - start)
        choices: dict[Job, list[dict]] = {job: [] for job in jobs}
        for r, (job, index, _) in enumerate(rows):
            if r in streams:
                streams[r].advance(out.texts[r])
            choices[job].append({"index": index, "text": out.texts[r], "tokens": len(out.tokens[r]),
                                 "finish_reason": FINISH_REASONS[out.finish_reasons[r]]})
        for job in jobs:
            job.events.put(("done", choices[job], sum(map(len, job.prompts))))


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


# ----------------------------------------------------------------------------- HTTP

class App:
    """What the handlers share: the served models, the scheduler, the key and the EOS sets."""

    def __init__(self, served, scheduler: Scheduler, api_key: str = ""):
        self.served, self.scheduler, self.api_key = served, scheduler, api_key
        self.started = int(time.time())
        self.vocab_size = min(int(m.cfg.vocab_size) for m, _ in served.models.values())
        sets = {(name, kind): eos_ids(served.tokenizer, model, kind, served.hf_path)
                for name, (model, _) in served.models.items() for kind in ("chat", "completion")}
        # Padded with -1 (never a token) to one width: the EOS array's shape is part of what compiles.
        width = max(map(len, sets.values()), default=1) or 1
        self.eos = {k: tuple(v) + (-1,) * (width - len(v)) for k, v in sets.items()}
        self.no_eos = (-1,) * width  # ignore_eos: always max_tokens tokens (benchmarks)
        # The first call sets the fast tokenizer's truncation and padding state (a mutation); the handler
        # threads' encodes and the scheduler's decodes after it only read, so they may overlap.
        self.encode(["a"], "completion")

    def encode(self, texts: list, kind: str) -> list[list[int]]:
        if texts and not isinstance(texts[0], str):
            return [list(t) for t in texts]
        return encode_prompts(self.served.tokenizer, texts, kind)

    def model_card(self, name: str) -> dict:
        info = self.served.info.get(name, {})
        return {"id": name, "object": "model", "created": self.started, "owned_by": "codejax",
                "root": info.get("path", name), "parent": info.get("parent"), "max_model_len": self.served.max_len}


ROUTES = {"/v1/models": ("GET",), "/v1/chat/completions": ("POST",), "/v1/completions": ("POST",),
          "/health": ("GET",)}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every answer has a Content-Length or is chunked
    server_version = "codejax.serve"
    timeout = 300  # an idle keep-alive connection frees its thread after this

    @property
    def app(self) -> App:
        return self.server.app  # type: ignore[attr-defined]

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        log.info("%s %s", self.address_string(), format % args)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        self.body_read = False
        path = urllib.parse.urlsplit(self.path).path.rstrip("/") or "/"
        route = "/v1/models" if path.startswith("/v1/models/") else path
        try:
            if route not in ROUTES:
                raise ApiError(404, f"no such endpoint: {path}; this server has {', '.join(ROUTES)}", code="not_found")
            if method not in ROUTES[route]:
                raise ApiError(405, f"{path} takes {' or '.join(ROUTES[route])}, not {method}",
                               code="method_not_allowed")
            if route != "/health":
                self._authorize()
            if route == "/health":
                self._send_json(200, {"status": "ok", "models": self.app.served.names,
                                      **self.app.scheduler.stats.snapshot()})
            elif path == "/v1/models":
                self._send_json(200, {"object": "list", "data": [self.app.model_card(n) for n in self.app.served.names]})
            elif route == "/v1/models":
                name = urllib.parse.unquote(path[len("/v1/models/"):])
                if name not in self.app.served.models:
                    raise ApiError(404, f"the model {name!r} is not served here; served models: "
                                        f"{', '.join(self.app.served.names)}", param="model", code="model_not_found")
                self._send_json(200, self.app.model_card(name))
            else:
                self._complete("chat" if route == "/v1/chat/completions" else "completion")
        except ApiError as e:
            if method != "GET" and not self.body_read:
                self.close_connection = True  # an unread body would be taken for the next request
            self._send_json(e.status, e.body(), allow=ROUTES.get(route) if e.status == 405 else None)

    def _authorize(self) -> None:
        if not self.app.api_key:
            return
        given = self.headers.get("Authorization", "")
        token = given[len("Bearer "):] if given.startswith("Bearer ") else ""
        if not hmac.compare_digest(token.encode(), self.app.api_key.encode()):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                           code="invalid_api_key")

    def _read_json(self) -> Any:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise ApiError(411, "send the request body with a Content-Length header (chunked bodies are not read)")
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise ApiError(400, "the Content-Length header is not a number") from None
        if length > MAX_BODY_BYTES:
            raise ApiError(413, f"the request body is {length} bytes; the limit is {MAX_BODY_BYTES}",
                           code="request_too_large")
        raw = self.rfile.read(length) if length > 0 else b""
        self.body_read = True
        if not raw.strip():
            raise ApiError(400, "the request body is empty; send a JSON object")
        try:
            return json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise ApiError(400, f"the request body is not valid JSON: not UTF-8 at byte {e.start}") from None
        except json.JSONDecodeError as e:
            raise ApiError(400, f"the request body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
                           ) from None

    def _complete(self, kind: str) -> None:
        call = parse_call(self._read_json(), kind, self.app)
        self.app.scheduler.submit(call.job)
        if call.job.stream:
            self._stream(call)
            return
        event = self._next_event(call.job)
        while event[0] == "delta":  # not streamed: only the final answer matters
            event = self._next_event(call.job)
        if event[0] == "error":
            raise ApiError(event[1], event[2], kind="server_error")
        self._send_json(200, response(call, event[1], event[2]))

    def _next_event(self, job: Job) -> tuple:
        while True:
            try:
                return job.events.get(timeout=1.0)
            except queue.Empty:
                if not self.app.scheduler.thread.is_alive():
                    return ("error", 503, "the server is shutting down")

    def _stream(self, call: Call) -> None:
        job = call.job
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            if call.kind == "chat":
                for index in range(job.rows):
                    self._event(chunk(call, index, role=True))
            while True:
                event = self._next_event(job)
                if event[0] == "delta":
                    self._event(chunk(call, event[1], event[2]))
                    continue
                if event[0] == "error":
                    self._event(ApiError(event[1], event[2], kind="server_error").body())
                else:
                    _, choices, prompt_tokens = event
                    for c in sorted(choices, key=lambda c: c["index"]):
                        self._event(chunk(call, c["index"], finish_reason=c["finish_reason"]))
                    if call.include_usage:
                        self._event({**chunk(call, 0), "choices": [], "usage": usage(prompt_tokens, choices)})
                self._write_chunk(b"data: [DONE]\n\n")
                self._write_chunk(b"")  # the chunked body's end
                return
        except _DISCONNECTS as e:
            job.cancelled.set()
            self.close_connection = True
            log.warning("client %s went away mid-stream (%s); stopped streaming to it", self.address_string(),
                        type(e).__name__)

    def _event(self, obj: dict) -> None:
        self._write_chunk(b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n")

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _send_json(self, status: int, obj: dict, allow: tuple[str, ...] | None = None) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if allow:
                self.send_header("Allow", ", ".join(allow))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except _DISCONNECTS as e:
            self.close_connection = True
            log.warning("client %s went away before its answer (%s)", self.address_string(), type(e).__name__)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True  # an open keep-alive connection never blocks shutdown
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: a burst of new connections past it waits for a
    # TCP retransmit (a second or more), which reads as a latency tail under concurrency.
    request_queue_size = 256

    def __init__(self, address, app: App):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        super().__init__(address, Handler)


# ----------------------------------------------------------------------------- command line

def parse_adapters(items: list[str], parser: argparse.ArgumentParser) -> dict[str, str]:
    adapters: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"--adapter {item!r} is not NAME=PATH")
        if name in adapters:
            parser.error(f"--adapter {name} is given twice; each adapter needs its own name")
        adapters[name] = path
    return adapters


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m codejax.serve", description=__doc__.split("\n\n")[0],
                                     epilog="See the module docstring (codejax/serve.py) for the API.")
    parser.add_argument("--model", required=True, metavar="PATH",
                        help="an HF model directory or a codejax training workdir (its latest checkpoint)")
    parser.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH",
                        help="serve a PEFT adapter (HF PEFT directory or PEFT run) as model NAME; repeatable")
    parser.add_argument("--served_name", default="", help="the base model's name (default: PATH's last component)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 = any free port (the listening line says which)")
    parser.add_argument("--max_batch", type=int, default=32, help="rows per generate() call")
    parser.add_argument("--batch_wait_ms", type=float, default=5.0,
                        help="a batch starts once no request has arrived for this long (at most 4x this "
                             "after its oldest request) or it has --max_batch rows")
    parser.add_argument("--chunk_size", type=int, default=8,
                        help="decode steps between host checks (stop strings, streamed text); smaller = smoother "
                             "streaming, larger = less host work")
    parser.add_argument("--dtype", default="", choices=["", "float32", "bfloat16", "float16"],
                        help="compute dtype ('' = the config's, float32)")
    parser.add_argument("--api_key", default="", help=f"require 'Authorization: Bearer KEY'; prefer ${API_KEY_ENV}, which `ps` does not show")
    parser.add_argument("--warmup_tokens", type=int, default=16,
                        help="before listening, one greedy request of this many tokens per model (compiles the "
                             "batch-1 path and shows the model works); 0 = none")
    args = parser.parse_args(argv)
    for name, low in (("max_batch", 1), ("chunk_size", 1), ("port", 0), ("warmup_tokens", 0)):
        if getattr(args, name) < low:
            parser.error(f"--{name}={getattr(args, name)}; must be >= {low}")
    if args.port > 65535 or args.batch_wait_ms < 0:
        parser.error("--port must be in [0, 65535] and --batch_wait_ms >= 0")
    args.adapters = parse_adapters(args.adapter, parser)
    return args


def warm_up(served, app: App, tokens: int, chunk_size: int) -> None:
    """One short greedy generation per served model, on this thread, before the scheduler starts."""
    for name, (model, variables) in served.models.items():
        start = time.monotonic()
        ids = app.encode(["def"], "completion")
        budget = min(tokens, served.max_len - len(ids[0]))
        generate(model, variables, served.tokenizer, ids,
                 SamplingParams(max_new_tokens=max(1, budget), eos_ids=app.eos[(name, "completion")],
                                chunk_size=chunk_size))
        log.info("warm-up of %s: %.1fs", name, time.monotonic() - start)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # force: an import may have installed a handler already, which would drop the time stamps.
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    api_key = args.api_key or os.environ.get(API_KEY_ENV, "")
    try:
        served = load_served(args.model, args.adapters, dtype=args.dtype, config=base_config(),
                             base_name=args.served_name)
    except (FileNotFoundError, NotADirectoryError, ValueError) as e:
        print(f"codejax.serve: error: {e}", file=sys.stderr)
        return 2
    scheduler = Scheduler(served, max_batch=args.max_batch, batch_wait_s=args.batch_wait_ms / 1000,
                          chunk_size=args.chunk_size)
    app = App(served, scheduler, api_key)
    if args.warmup_tokens:
        warm_up(served, app, args.warmup_tokens, args.chunk_size)
    try:
        server = Server((args.host, args.port), app)
    except OSError as e:
        print(f"codejax.serve: error: cannot listen on {args.host}:{args.port}: {e.strerror or e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    scheduler.start()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="codejax-serve-http",
                     daemon=True).start()
    host, port = server.server_address[:2]
    if not api_key and host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("listening on %s without --api_key: anyone who reaches this port can use the model", host)
    log.info("serving %s", ", ".join(served.names))
    print(f"codejax.serve: listening on http://{f'[{host}]' if ':' in host else host}:{port}", flush=True)
    while not stop.wait(0.5):
        pass
    log.info("shutting down")
    server.shutdown()
    scheduler.stop()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
