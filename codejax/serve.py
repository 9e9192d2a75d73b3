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

This file holds the HTTP side and the command line; the request/response schema is in
codejax/server/openai_api.py and the batching scheduler in codejax/server/scheduler.py.
"""
from __future__ import annotations

import argparse
import hmac
import http.server
import json
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
import urllib.parse
from typing import Any

from codejax.config import base_config
from codejax.evaluation.sampling import encode_prompts, eos_ids
from codejax.generate import SamplingParams, generate
from codejax.server.openai_api import ApiError, Call, Job, chunk, parse_call, response, usage
from codejax.server.scheduler import Scheduler
from codejax.setup.serving import load_served

log = logging.getLogger("codejax.serve")

MAX_BODY_BYTES = 8 * 2**20
API_KEY_ENV = "CODEJAX_SERVE_API_KEY"
_DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, socket.timeout)


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
