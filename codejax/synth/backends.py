"""Generation backends for synthetic data: one interface, `complete(requests) -> completions`.

    backend = make_backend(config)           # synth.backend = local | http
    outs = backend.complete([Request(messages=(("user", "Write ..."),), max_tokens=256)])
    outs[0].text, outs[0].finish_reason, outs[0].completion_tokens, outs[0].error

- `local` (`LocalBackend`): codejax's own sampler. `synth.model_path` is an HF model directory or
  a training workdir (its latest checkpoint), with `synth.adapters` (NAME=PATH, the first is used)
  as served by `python -m codejax.serve` (codejax/setup/serving.py); '' = the model the config's
  model/tokenizer/peft sections describe (the `:tiny` variant's random tiny model). Requests are
  grouped by their sampling settings and run `synth.batch_size` rows per `generate` call; the last
  batch is padded to the full shape, so one compile serves every batch. A batch that runs out of
  memory is retried in halves, `synth.retries` times.
- `http` (`HttpBackend`): any OpenAI-compatible endpoint (vLLM, TGI, llama.cpp, a hosted API,
  codejax.serve): `synth.url` (or $OPENAI_BASE_URL), `synth.http_model` (or $OPENAI_MODEL), and
  the key read from the environment variable named by `synth.api_key_env` (default
  OPENAI_API_KEY). The key is never stored in the config, a log line or an error message. Up to
  `synth.max_concurrency` requests are in flight; connection errors, 429 and 5xx are retried
  `synth.retries` times with exponential backoff (honouring Retry-After); other 4xx are not.

A request that fails for good comes back with `error` set (counted in the report), not as an
exception, so one bad prompt does not end a long run. Over both, `CachedBackend` keys each
completion by method, prompt and generation settings in WORKDIR/cache/generations.jsonl, so a
killed run resumes without regenerating, and `TokenBudget` stops a run at `synth.max_total_tokens`
(requests past it come back as errors; the items made so far are kept).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from typing import Protocol, Sequence

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Request:
    """One completion to make: chat `messages` ((role, content) pairs) or a raw `prompt`."""

    messages: tuple[tuple[str, str], ...] = ()
    prompt: str = ""
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self):
        if bool(self.messages) == bool(self.prompt):
            raise ValueError("a Request has either messages or a prompt")

    def key_fields(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Completion:
    text: str = ""
    finish_reason: str = ""  # stop | length | error
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str = ""  # why the request failed for good ('' = it did not)
    cached: bool = False
    final: bool = False  # the error is the request's own (too long, a 4xx): cached, not retried by a rerun


class Backend(Protocol):
    name: str  # identifies the model and endpoint in cache keys (never a secret)

    def complete(self, requests: Sequence[Request]) -> list[Completion]: ...


# ----------------------------------------------------------------------------- local


def _is_oom(err: BaseException) -> bool:
    text = f"{type(err).__name__}: {err}"
    return isinstance(err, MemoryError) or "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


class LocalBackend:
    """codejax's sampler in this process (see the module docstring)."""

    def __init__(self, model, variables, tokenizer, *, name: str, hf_path: str = "", batch_size: int = 16,
                 retries: int = 2, chunk_size: int = 32):
        from codejax.evaluation.sampling import eos_ids

        self.model, self.variables, self.tokenizer = model, variables, tokenizer
        self.name, self.batch_size, self.retries, self.chunk_size = name, max(1, batch_size), retries, chunk_size
        self.max_len = int(model.cfg.max_position_embeddings)
        self._eos = {mode: eos_ids(tokenizer, model, mode, hf_path) for mode in ("chat", "completion")}

    def _encode(self, request: Request) -> list[int]:
        if request.messages:
            if not getattr(self.tokenizer, "chat_template", None):
                raise ValueError("synth.chat=True but the local model's tokenizer has no chat template; "
                                 "set synth.chat=False to prompt it as a base model")
            text = self.tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in request.messages],
                                                      add_generation_prompt=True, tokenize=False)
        else:
            text = request.prompt
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def complete(self, requests: Sequence[Request]) -> list[Completion]:
        out: list[Completion | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.max_tokens, r.temperature, r.top_p, r.stop, bool(r.messages)), []).append(i)
        for (max_tokens, temperature, top_p, stop, chat), rows in groups.items():
            encoded = {i: self._encode(requests[i]) for i in rows}
            for i in rows:  # a prompt the model cannot hold fails alone, with the numbers
                if len(encoded[i]) + max_tokens > self.max_len:
                    out[i] = Completion(finish_reason="error", prompt_tokens=len(encoded[i]), final=True,
                                        error=f"prompt of {len(encoded[i])} tokens + max_tokens {max_tokens} > the "
                                              f"model's {self.max_len} positions")
            live = sorted((i for i in rows if out[i] is None), key=lambda i: -len(encoded[i]))
            for first in range(0, len(live), self.batch_size):
                chunk = live[first:first + self.batch_size]
                texts = self._run(chunk, encoded, requests, max_tokens, temperature, top_p, stop, chat, self.retries)
                for i, c in zip(chunk, texts):
                    out[i] = c
        return out  # type: ignore[return-value]

    def _run(self, chunk, encoded, requests, max_tokens, temperature, top_p, stop, chat, retries):
        from codejax.generate import SamplingParams, generate

        padded = chunk + [chunk[-1]] * (self.batch_size - len(chunk))
        params = SamplingParams(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=stop,
                                eos_ids=self._eos["chat" if chat else "completion"], seed=requests[chunk[0]].seed,
                                chunk_size=self.chunk_size)
        try:
            res = generate(self.model, self.variables, self.tokenizer, [encoded[i] for i in padded], params)
        except Exception as e:  # noqa: BLE001 - only running out of memory is retried, in halves
            if not _is_oom(e) or retries <= 0 or len(chunk) == 1:
                raise
            half = len(chunk) // 2
            log.warning("local generation ran out of memory at %d rows; retrying in halves", len(chunk))
            return (self._run(chunk[:half], encoded, requests, max_tokens, temperature, top_p, stop, chat, retries - 1)
                    + self._run(chunk[half:], encoded, requests, max_tokens, temperature, top_p, stop, chat,
                                retries - 1))
        return [Completion(res.texts[r], "length" if res.finish_reasons[r] == "length" else "stop",
                           len(encoded[i]), len(res.tokens[r])) for r, i in enumerate(chunk)]


# ----------------------------------------------------------------------------- http

_RETRY_STATUS = (408, 409, 425, 429, 500, 502, 503, 504)


class HttpBackend:
    """An OpenAI-compatible endpoint (see the module docstring)."""

    def __init__(self, url: str, model: str, *, api_key: str = "", chat: bool = True, max_concurrency: int = 8,
                 retries: int = 3, backoff_s: float = 1.0, timeout_s: float = 120.0):
        if not url:
            raise ValueError("synth.backend=http needs synth.url (or $OPENAI_BASE_URL): the endpoint's base URL, "
                             "e.g. http://127.0.0.1:8000/v1")
        if not model:
            raise ValueError("synth.backend=http needs synth.http_model (or $OPENAI_MODEL): the model name to ask for")
        self.url, self.model, self.chat = url.rstrip("/"), model, chat
        self.name = f"http:{self.url}:{model}"
        self._key = api_key  # held in memory only; never part of name, logs or errors
        self.max_concurrency, self.retries = max(1, max_concurrency), max(0, retries)
        self.backoff_s, self.timeout_s = backoff_s, timeout_s

    def _body(self, r: Request) -> tuple[str, dict]:
        body = {"model": self.model, "max_tokens": r.max_tokens, "temperature": r.temperature, "top_p": r.top_p,
                "seed": r.seed, "n": 1}
        if r.stop:
            body["stop"] = list(r.stop)
        if r.messages:
            return "/chat/completions", {**body, "messages": [{"role": a, "content": c} for a, c in r.messages]}
        return "/completions", {**body, "prompt": r.prompt}

    def _post(self, path: str, body: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 - the configured endpoint
            return json.loads(resp.read().decode("utf-8"))

    def _one(self, r: Request) -> Completion:
        path, body = self._body(r)
        last, final = "", False
        for attempt in range(self.retries + 1):
            wait = self.backoff_s * 2 ** attempt
            try:
                data = self._post(path, body)
                choice = data["choices"][0]
                text = choice["message"]["content"] if r.messages else choice["text"]
                usage = data.get("usage") or {}
                return Completion(text or "", "length" if choice.get("finish_reason") == "length" else "stop",
                                  int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))
            except urllib.error.HTTPError as e:
                detail = _error_message(e)
                last = f"HTTP {e.code} from {self.url}{path}: {detail}"
                if e.code not in _RETRY_STATUS:
                    final = True
                    break
                retry_after = e.headers.get("Retry-After") if e.headers else None
                if retry_after and retry_after.strip().isdigit():
                    wait = max(wait, float(retry_after))
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
                last = f"cannot reach {self.url}{path}: {getattr(e, 'reason', e)}"
            except (KeyError, IndexError, TypeError, ValueError) as e:
                last = f"{self.url}{path} answered something that is not an OpenAI completion ({type(e).__name__}: {e})"
                break
            if attempt < self.retries:
                time.sleep(wait)
        return Completion(finish_reason="error", error=last, final=final)

    def complete(self, requests: Sequence[Request]) -> list[Completion]:
        if len(requests) <= 1:
            return [self._one(r) for r in requests]
        with concurrent.futures.ThreadPoolExecutor(min(self.max_concurrency, len(requests))) as pool:
            return list(pool.map(self._one, requests))


def _error_message(e: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(e.read().decode("utf-8", "replace"))
        return str(body.get("error", {}).get("message", body))[:300]
    except (ValueError, AttributeError, OSError):
        return str(e.reason)[:300]


# ----------------------------------------------------------------------------- cache and budget


def cache_key(method: str, request: Request, backend_name: str, sample: int) -> str:
    blob = json.dumps({"method": method, "backend": backend_name, "sample": sample, **request.key_fields()},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class TokenBudget:
    """Prompt + completion tokens spent, against a cap (0 = none). Cached completions count too,
    so a resumed run stops where the first run would have."""

    def __init__(self, cap: int):
        self.cap, self.used = cap, 0

    def charge(self, completions: Sequence[Completion]) -> None:
        self.used += sum(c.prompt_tokens + c.completion_tokens for c in completions)

    @property
    def spent(self) -> str:
        """'' while tokens are left, else why generation stopped."""
        return f"synth.max_total_tokens={self.cap} spent ({self.used} tokens)" if self.cap and self.used >= self.cap \
            else ""


class CachedBackend:
    """A backend behind the on-disk completion cache (append-only JSONL; a line cut short by a
    kill is ignored) and the token budget. A failure of the request itself (too long, a 4xx) is
    cached; any other failure (unreachable, 5xx after the retries) is not: a rerun retries it."""

    def __init__(self, backend: Backend, path: str, budget: TokenBudget):
        self.backend, self.path, self.budget = backend, path, budget
        self._lock = threading.Lock()
        self._entries: dict[str, dict] = {}
        self.hits = self.misses = 0
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                        self._entries[entry["key"]] = entry
                    except (ValueError, KeyError, TypeError):
                        continue  # the last line of a killed run
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)

    @property
    def name(self) -> str:
        return self.backend.name

    def complete(self, method: str, requests: Sequence[Request], samples: Sequence[int] | None = None
                 ) -> list[Completion]:
        if self.budget.spent:  # the method goes on with what it has; run_generators starts no other
            return [Completion(finish_reason="error", error=self.budget.spent) for _ in requests]
        samples = list(samples) if samples is not None else [0] * len(requests)
        keys = [cache_key(method, r, self.backend.name, s) for r, s in zip(requests, samples)]
        out: list[Completion | None] = [None] * len(requests)
        todo = []
        for i, k in enumerate(keys):
            e = self._entries.get(k)
            if e is not None:
                out[i] = Completion(e["text"], e["finish_reason"], e["prompt_tokens"], e["completion_tokens"],
                                    e.get("error", ""), cached=True, final=bool(e.get("error")))
            else:
                todo.append(i)
        self.hits += len(requests) - len(todo)
        self.misses += len(todo)
        if todo:
            fresh = self.backend.complete([requests[i] for i in todo])
            with self._lock, open(self.path, "a", encoding="utf-8") as f:
                for i, c in zip(todo, fresh):
                    out[i] = c
                    if not c.error or c.final:
                        entry = {"key": keys[i], "method": method, "text": c.text, "finish_reason": c.finish_reason,
                                 "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                                 **({"error": c.error} if c.error else {})}
                        self._entries[keys[i]] = entry
                        f.write(json.dumps(entry, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
        self.budget.charge(out)  # type: ignore[arg-type]
        return out  # type: ignore[return-value]


# ----------------------------------------------------------------------------- from the config


def http_backend(sc) -> HttpBackend:
    key_env = sc.api_key_env
    return HttpBackend(sc.url or os.environ.get("OPENAI_BASE_URL", ""),
                       sc.http_model or os.environ.get("OPENAI_MODEL", ""),
                       api_key=os.environ.get(key_env, "") if key_env else "", chat=sc.chat,
                       max_concurrency=sc.max_concurrency, retries=sc.retries, backoff_s=sc.retry_backoff_s,
                       timeout_s=sc.request_timeout_s)


class LazyBackend:
    """A backend built on its first request: a rerun that finds everything in the cache never loads the model."""

    def __init__(self, name: str, build):
        self.name, self._build, self._backend = name, build, None

    def complete(self, requests: Sequence[Request]) -> list[Completion]:
        if self._backend is None:
            self._backend = self._build()
        return self._backend.complete(requests)


def local_backend(config, model_path: str | None = None, adapters: str | None = None, batch_size: int | None = None,
                  field: str = "synth.model_path") -> LazyBackend:
    """The sampler on `model_path` (default synth.model_path) with `adapters` (default synth.adapters),
    or on the config's model when the path is ''; `field` names the path in errors."""
    sc = config.synth
    model_path = sc.model_path if model_path is None else model_path
    batch_size = sc.batch_size if batch_size is None else batch_size
    if model_path:
        adapters = dict(parse_adapters(sc.adapters if adapters is None else adapters))
        if not os.path.exists(model_path):
            raise FileNotFoundError(f"{field}={model_path!r} does not exist")
        name = f"local:{os.path.abspath(model_path)}:{next(iter(adapters), '')}"
        return LazyBackend(name, lambda: _served_backend(config, model_path, adapters, name, batch_size))
    # A config-described model is identified by its sections (and seed: a random model's weights).
    ident = hashlib.sha256(json.dumps({"model": config.model.to_dict(), "peft": config.peft.to_dict(),
                                       "tokenizer": config.tokenizer.to_dict(), "seed": config.seed},
                                      sort_keys=True, default=str).encode()).hexdigest()[:16]
    return LazyBackend(f"local:config:{ident}", lambda: _config_backend(config, f"local:config:{ident}", batch_size))


def _served_backend(config, model_path: str, adapters: dict[str, str], name: str, batch_size: int) -> LocalBackend:
    from codejax.setup.serving import load_served

    served = load_served(model_path, adapters or None, config=config)
    model, variables = served.models[next(iter(adapters), served.base_name)]
    return LocalBackend(model, variables, served.tokenizer, name=name, hf_path=served.hf_path,
                        batch_size=batch_size, retries=config.synth.retries)


def _config_backend(config, name: str, batch_size: int) -> LocalBackend:
    from codejax.setup import load_model, load_tokenizer

    tokenizer = load_tokenizer(config)
    model, variables, _ = load_model(config, tokenizer, None)
    return LocalBackend(model, variables, tokenizer, name=name, hf_path=config.model.hf_path,
                        batch_size=batch_size, retries=config.synth.retries)


def parse_adapters(spec: str) -> list[tuple[str, str]]:
    """'a=/p/a,b=/p/b' -> [(a, /p/a), (b, /p/b)]; a malformed entry names synth.adapters."""
    out = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ValueError(f"synth.adapters entry {item!r} is not NAME=PATH")
        out.append((name.strip(), path.strip()))
    return out


BACKENDS = {"local": local_backend, "http": lambda config: http_backend(config.synth)}


def make_backend(config) -> Backend:
    if config.synth.backend not in BACKENDS:
        raise ValueError(f"synth.backend={config.synth.backend!r}; expected one of {sorted(BACKENDS)}")
    return BACKENDS[config.synth.backend](config)
