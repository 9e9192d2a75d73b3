"""`python -m codejax.serve` as a real subprocess over HTTP, checked against `generate` called directly.

One server per module (a tiny noisy Llama saved as an HF directory, plus a LoRA adapter in the HF
PEFT format); a second, short-lived one checks the API key and a clean SIGTERM exit. The model
loading (codejax/setup/serving.py) is also checked in-process on training workdirs, and the
scheduler's failure path on a real HTTP server in this process.
"""
import concurrent.futures
import http.client
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers

from codejax.config import base_config
from codejax.evaluation.sampling import encode_prompts, eos_ids
from codejax.generate import SamplingParams, generate
from codejax.models import Transformer, init_params, load_hf, save_hf, tiny_config
from codejax.peft import PeftSpec, init_adapters, load_hf_adapter, save_hf_adapter, spec_from_config
from codejax.setup import serving
from codejax.train.checkpoint import Checkpointer
from codejax.train.workdir import write_config

ROOT = Path(__file__).resolve().parents[1]
MAX_LEN = 128  # the tiny model's context, small so the context-length check is cheap to hit
TOKENS = 16  # max_tokens of most requests: one compiled decode length for the whole module
BASE, ADAPTER = "tiny", "lora"
# A chat prompt and a completion prompt in the same 32-token bucket of the sampler, so that one-row
# requests of either kind share one compiled shape (compiling is most of this module's time).
CHAT = [{"role": "user", "content": "Add two numbers."}]
PROMPT = 'def add(a, b):\n    """Return the sum of a and b."""\n'
SHORT = [f"def f{i}(x):" for i in range(16)]  # 16-token bucket: the 16-row batches
LISTENING = re.compile(r"^codejax\.serve: listening on http://([0-9.]+):(\d+)$")


def _noisy(tree, seed=1, scale=0.3):
    # Far from uniform logits, so greedy argmax ties cannot hide a difference between the two paths.
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [x + scale * jax.random.normal(k, x.shape, x.dtype)
                                                  for x, k in zip(leaves, keys)])


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, chat_tokenizer_dir):
    """A tiny HF model directory (ChatML tokenizer) and a LoRA adapter on it in the HF PEFT format."""
    root = tmp_path_factory.mktemp("serve")
    tok = transformers.AutoTokenizer.from_pretrained(chat_tokenizer_dir)
    cfg = tiny_config("llama", vocab_size=len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      max_position_embeddings=MAX_LEN)
    params = _noisy(init_params(cfg, jax.random.PRNGKey(0)))
    save_hf(root / "model", cfg, params, tokenizer=tok)
    lora = Transformer(cfg, peft=PeftSpec("lora", rank=4))
    save_hf_adapter(root / "adapter", lora, _noisy(init_adapters(lora, params, jax.random.PRNGKey(1)), seed=2,
                                                   scale=0.5))  # nonzero B: the adapter changes the output
    return types.SimpleNamespace(root=root, model=root / "model", adapter=root / "adapter", cfg=cfg, params=params)


class Reference:
    """codejax's generate in this process, on what the server loads from the same directories."""

    def __init__(self, dirs):
        self.tok = transformers.AutoTokenizer.from_pretrained(dirs.model)
        model, params = load_hf(dirs.model)
        spec, adapters = load_hf_adapter(dirs.adapter, model.cfg)
        self.hf_path = str(dirs.model)
        self.models = {BASE: (model, {"params": params}),
                       ADAPTER: (Transformer(model.cfg, peft=spec), {"params": params, **adapters})}

    def prompt_ids(self, kind, prompts):
        texts = [self.tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) if kind == "chat" else p
                 for p in prompts]
        return encode_prompts(self.tok, texts, kind)

    def run(self, kind, prompts, name=BASE, max_tokens=TOKENS, stop=(), n=1):
        model, variables = self.models[name]
        params = SamplingParams(max_new_tokens=max_tokens, stop=tuple(stop), n=n,
                                eos_ids=eos_ids(self.tok, model, kind, self.hf_path))
        return generate(model, variables, self.tok, self.prompt_ids(kind, prompts), params)


@pytest.fixture(scope="module")
def ref(dirs):
    return Reference(dirs)


def _server_env():
    env = dict(os.environ)
    # One CPU device: the 8 fake devices of the test session would only shard a tiny model over 2 cores.
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", "").strip()
    env.pop("CODEJAX_SERVE_API_KEY", None)
    return env


def _start(args, log_path, env=None, timeout_s=180):
    """Start the server; returns (process, port) once it printed its listening line."""
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "codejax.serve", *args, "--port", "0"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=log, text=True, env=env or _server_env())
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()  # drains it
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5).rstrip("\n")
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        match = LISTENING.match(line)
        if match:
            return proc, int(match.group(2))
        pytest.fail(f"unexpected stdout line before the listening line: {line!r}")
    proc.kill()
    pytest.fail(f"the server did not start:\n{Path(log_path).read_text()[-3000:]}")


def _stop(proc) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return -1


@pytest.fixture(scope="module")
def server(dirs):
    log_path = dirs.root / "server.log"
    proc, port = _start(["--model", str(dirs.model), "--served_name", BASE, "--adapter", f"{ADAPTER}={dirs.adapter}",
                         "--max_batch", "16", "--batch_wait_ms", "50", "--chunk_size", "2", "--warmup_tokens", "0"],
                        log_path)
    yield types.SimpleNamespace(port=port, log=log_path, proc=proc)
    _stop(proc)


def _call(port, method, path, body=None, *, raw=None, headers=None, timeout=120):
    """(status, parsed JSON or raw text, response headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    text = resp.read().decode("utf-8")
    conn.close()
    try:
        return resp.status, json.loads(text), dict(resp.getheaders())
    except json.JSONDecodeError:
        return resp.status, text, dict(resp.getheaders())


def _post(port, path, body, **kw):
    return _call(port, "POST", path, body, **kw)


def _events(text):
    """The JSON events of an SSE body, checking the [DONE] terminator."""
    blocks = [b for b in text.split("\n\n") if b]
    assert all(b.startswith("data: ") for b in blocks), text[:300]
    assert blocks[-1] == "data: [DONE]"
    return [json.loads(b[len("data: "):]) for b in blocks[:-1]]


def _alongside(request, reference):
    """(request(), reference()), the server's answer computed while this process computes its own: each
    compiles its first call of a shape, and on 2 cores the two compiles overlap."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(request)
        want = reference()
        return answer.result(), want


def _chat(content=CHAT, **kw):
    return {"model": BASE, "messages": content, "max_tokens": TOKENS, "temperature": 0, **kw}


def _completion(prompt, **kw):
    return {"model": BASE, "prompt": prompt, "max_tokens": TOKENS, "temperature": 0, **kw}


# ----------------------------------------------------------------------------- the API

def test_models_lists_the_base_and_the_adapter(server):
    status, body, _ = _call(server.port, "GET", "/v1/models")
    assert status == 200 and body["object"] == "list"
    assert [m["id"] for m in body["data"]] == [BASE, ADAPTER]
    assert all(m["object"] == "model" and m["owned_by"] == "codejax" for m in body["data"])
    assert body["data"][1]["parent"] == BASE and body["data"][0]["max_model_len"] == MAX_LEN
    assert _call(server.port, "GET", f"/v1/models/{ADAPTER}")[1]["id"] == ADAPTER


def test_greedy_chat_and_completion_equal_generate(server, ref):
    (status, body, headers), want = _alongside(
        lambda: _post(server.port, "/v1/chat/completions", _chat(user="someone", frequency_penalty=0, logit_bias={})),
        lambda: ref.run("chat", [CHAT]))  # the extra fields are ignored
    assert status == 200 and int(headers["Content-Length"]) > 0
    assert body["object"] == "chat.completion" and body["model"] == BASE and body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": want.texts[0]}
    assert choice["finish_reason"] == {"eos": "stop"}.get(want.finish_reasons[0], want.finish_reasons[0])
    assert body["usage"] == {"prompt_tokens": len(want.prompt_tokens[0]), "completion_tokens": len(want.tokens[0]),
                             "total_tokens": len(want.prompt_tokens[0]) + len(want.tokens[0])}

    (status, body, _), want = _alongside(lambda: _post(server.port, "/v1/completions", _completion(PROMPT)),
                                         lambda: ref.run("completion", [PROMPT]))
    assert status == 200 and body["object"] == "text_completion"
    assert body["choices"][0]["text"] == want.texts[0] and body["usage"]["completion_tokens"] == len(want.tokens[0])


def test_the_adapter_is_served_under_its_name(server, ref):
    (status, body, _), want = _alongside(
        lambda: _post(server.port, "/v1/completions", _completion(PROMPT, model=ADAPTER)),
        lambda: ref.run("completion", [PROMPT], name=ADAPTER))
    base = ref.run("completion", [PROMPT])
    assert want.texts[0] != base.texts[0]  # the LoRA really changes the output, so the check below tests it
    assert status == 200 and body["model"] == ADAPTER and body["choices"][0]["text"] == want.texts[0]


def test_n_samples_of_several_prompts(server, ref):
    prompts = SHORT[:8]  # x 2 samples: the 16-row shape the concurrency test uses too
    (status, body, _), want = _alongside(lambda: _post(server.port, "/v1/completions", _completion(prompts, n=2)),
                                         lambda: ref.run("completion", prompts, n=2).texts)
    assert status == 200
    assert [(c["index"], c["text"]) for c in body["choices"]] == list(enumerate(want))  # prompt i, sample j: 2i + j
    assert want[0] == want[1] and want[0] != want[2]  # greedy: the samples of a prompt agree, prompts differ
    prompt_tokens = sum(len(p) for p in ref.prompt_ids("completion", prompts))
    assert body["usage"]["prompt_tokens"] == prompt_tokens  # each prompt once, not once per sample


def test_stop_strings_cut_and_stream_the_same(server, ref):
    free = ref.run("completion", [PROMPT]).texts[0]
    i = next(i for i in range(2, len(free) - 2) if "\ufffd" not in free[i:i + 2])
    stop = free[i:i + 2]
    want = free[:free.find(stop)]
    status, body, _ = _post(server.port, "/v1/completions", _completion(PROMPT, stop=[stop, "never-seen-xyz"]))
    assert status == 200 and body["choices"][0]["text"] == want and body["choices"][0]["finish_reason"] == "stop"
    status, text, _ = _post(server.port, "/v1/completions", _completion(PROMPT, stop=stop, stream=True))
    events = _events(text)
    assert "".join(e["choices"][0]["text"] for e in events) == want  # nothing past the stop string was sent
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


def test_streaming_sends_the_same_text_in_pieces(server, ref):
    want = ref.run("chat", [CHAT]).texts[0]
    assert len(want) > 8  # long enough to arrive in several decode chunks
    status, text, headers = _post(server.port, "/v1/chat/completions", _chat(stream=True))
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = _events(text)
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    pieces = [e["choices"][0]["delta"]["content"] for e in events[1:-1]]
    assert "".join(pieces) == want and len(pieces) > 1
    assert events[-1]["choices"][0]["delta"] == {} and events[-1]["choices"][0]["finish_reason"] in ("stop", "length")

    status, text, _ = _post(server.port, "/v1/completions",
                            _completion(PROMPT, stream=True, stream_options={"include_usage": True}))
    events = _events(text)
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == ref.run("completion", [PROMPT]).texts[0]
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] > 0


def test_concurrent_requests_are_batched_and_answered_correctly(server, ref):
    prompts = SHORT
    before = _call(server.port, "GET", "/health")[1]

    def one(i):
        status, body, _ = _post(server.port, "/v1/completions", _completion(prompts[i]))
        return status, body["choices"][0]["text"]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = pool.map(one, range(16))
        want = ref.run("completion", prompts).texts  # one batch here, while the server batches the 16 requests
        answers = list(answers)
    assert answers == [(200, w) for w in want]
    after = _call(server.port, "GET", "/health")[1]
    assert after["requests"] - before["requests"] == 16
    assert after["batches"] - before["batches"] < 16 and after["max_rows_per_batch"] > 1  # merged, not one by one


def test_errors_are_openai_style(server):
    port = server.port
    status, body, _ = _post(port, "/v1/completions", None, raw=b'{"prompt": "x",\n "max_tokens": }')
    assert status == 400 and "JSON" in body["error"]["message"] and "line 2 column" in body["error"]["message"]
    assert body["error"]["type"] == "invalid_request_error"
    status, body, _ = _post(port, "/v1/chat/completions", _chat(model="gpt-4"))
    assert status == 404 and body["error"]["code"] == "model_not_found"
    assert BASE in body["error"]["message"] and ADAPTER in body["error"]["message"]
    status, body, _ = _post(port, "/v1/completions", _completion("def f():", max_tokens=MAX_LEN))
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"
    assert str(MAX_LEN) in body["error"]["message"] and f"max_tokens is {MAX_LEN}" in body["error"]["message"]
    status, body, _ = _post(port, "/v1/completions", {"model": BASE})
    assert status == 400 and body["error"]["param"] == "prompt"
    status, body, _ = _post(port, "/v1/chat/completions", {"model": BASE, "messages": []})
    assert status == 400 and body["error"]["param"] == "messages"
    status, body, _ = _post(port, "/v1/completions", _completion("x", temperature="hot"))
    assert status == 400 and body["error"]["param"] == "temperature" and "number" in body["error"]["message"]
    status, body, _ = _post(port, "/v1/completions", _completion("x", n=True))
    assert status == 400 and body["error"]["param"] == "n"
    status, body, _ = _post(port, "/v1/completions", None, raw=b'{"prompt": "x", "top_p": NaN}')
    assert status == 400 and body["error"]["param"] == "top_p" and "finite" in body["error"]["message"]
    status, body, _ = _post(port, "/v1/chat/completions", _chat(tools=[{"type": "function"}]))
    assert status == 400 and body["error"]["param"] == "tools"
    assert _call(port, "GET", "/v1/nothing")[0] == 404
    status, body, headers = _call(port, "GET", "/v1/chat/completions")
    assert status == 405 and headers["Allow"] == "POST"
    assert _call(port, "DELETE", "/v1/models")[0] == 405
    # An oversized body is refused from its Content-Length, before it is read.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("POST", "/v1/completions")
    conn.putheader("Content-Length", str(9 * 2**20))
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn.close()
    assert _call(port, "GET", "/health")[0] == 200  # and the server is still there


def test_a_client_that_leaves_mid_stream_does_not_stop_the_server(server, ref):
    body = json.dumps(_chat(stream=True)).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        received = b""
        while b"data: " not in received:
            received += sock.recv(4096)
    assert received.startswith(b"HTTP/1.1 200")
    deadline = time.monotonic() + 30
    while "went away" not in server.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "went away mid-stream" in server.log.read_text() and "Traceback" not in server.log.read_text()
    status, answer, _ = _post(server.port, "/v1/chat/completions", _chat())
    assert status == 200 and answer["choices"][0]["message"]["content"] == ref.run("chat", [CHAT]).texts[0]


def test_the_openai_client_works(server, ref):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="x")
    out = client.chat.completions.create(model=BASE, messages=CHAT, max_tokens=TOKENS, temperature=0)
    assert out.choices[0].message.content == ref.run("chat", [CHAT]).texts[0]
    pieces = [c.choices[0].text for c in client.completions.create(model=BASE, prompt=PROMPT,
                                                                   max_tokens=TOKENS, temperature=0, stream=True)]
    assert "".join(pieces) == ref.run("completion", [PROMPT]).texts[0]


def test_api_key_and_a_clean_sigterm(dirs, tmp_path):
    env = {**_server_env(), "CODEJAX_SERVE_API_KEY": "s3cret-key"}
    proc, port = _start(["--model", str(dirs.model), "--warmup_tokens", "0"], tmp_path / "auth.log", env=env)
    try:
        status, body, _ = _call(port, "GET", "/v1/models")
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        assert _call(port, "GET", "/v1/models", headers={"Authorization": "Bearer wrong"})[0] == 401
        status, body, _ = _call(port, "GET", "/v1/models", headers={"Authorization": "Bearer s3cret-key"})
        assert status == 200 and body["data"][0]["id"] == "model"  # the directory's name by default
        assert _call(port, "GET", "/health")[0] == 200  # liveness probes need no key
    finally:
        code = _stop(proc)
    assert code == 0
    assert "s3cret-key" not in (tmp_path / "auth.log").read_text()


# ----------------------------------------------------------------------------- in this process

def test_a_failed_batch_answers_500_and_the_server_goes_on(dirs, ref):
    from codejax.serve import App, Scheduler, Server
    model, variables = ref.models[BASE]
    broken = {"params": {k: v for k, v in variables["params"].items() if k != "embed_tokens"}}
    served = serving.Served(ref.tok, {BASE: (model, variables), "broken": (model, broken)}, BASE, ref.hf_path,
                            MAX_LEN)
    scheduler = Scheduler(served, max_batch=4, batch_wait_s=0.0, chunk_size=4)
    server = Server(("127.0.0.1", 0), App(served, scheduler))
    scheduler.start()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        status, body, _ = _post(port, "/v1/completions", _completion(PROMPT, model="broken"))
        assert status == 500 and "generation failed" in body["error"]["message"]
        status, body, _ = _post(port, "/v1/completions", _completion(PROMPT))
        assert status == 200 and body["choices"][0]["text"] == ref.run("completion", [PROMPT]).texts[0]
        assert _call(port, "GET", "/health")[1]["failed_batches"] == 1
    finally:
        server.shutdown()
        scheduler.stop()
        server.server_close()


def test_default_config_is_base_config():
    mine, base = serving.default_config(), base_config()
    for section in ("model", "tokenizer", "peft", "parallel"):
        assert mine[section].to_dict() == base[section].to_dict(), section
    assert mine.train.export_hf == base.train.export_hf and mine.seed == base.seed


def _run_dir(root, chat_tokenizer_dir, trainable, **peft):
    """A training workdir as a codejax run leaves it: config.json and one checkpoint whose train state's
    params are `trainable` ({"params": weights} for full fine-tuning, {collection: tree} for PEFT)."""
    config = base_config()
    config.model.preset = "tiny"  # the shapes of the dirs model (the tiny preset's own context length)
    config.tokenizer.path = chat_tokenizer_dir
    for key, value in peft.items():
        setattr(config.peft, key, value)
    write_config(config, str(root))
    ckpt = Checkpointer(root / "checkpoints", save_every=1, async_save=False)
    ckpt.save(3, {"params": trainable}, {}, {}, force=True)
    ckpt.close()
    return config


def _logits(model, variables, tokens):
    return np.asarray(jax.jit(model.apply)(variables, tokens))


def test_training_workdirs_serve_their_checkpoints(dirs, chat_tokenizer_dir, tmp_path):
    tokens = jnp.asarray([[5, 17, 99, 3, 42, 7, 8, 9]])
    # A full fine-tuning run: its weights. (The tiny preset builds the same shapes as the dirs model.)
    trained = _noisy(dirs.params, seed=7, scale=0.1)
    _run_dir(tmp_path / "full", chat_tokenizer_dir, {"params": trained})
    assert serving.is_run_dir(str(tmp_path / "full")) and not serving.is_run_dir(str(dirs.model))
    served = serving.load_served(str(tmp_path / "full"))
    assert served.base_name == "full" and served.info["full"]["checkpoint"].endswith("3")
    model, variables = served.models["full"]
    np.testing.assert_allclose(_logits(model, variables, tokens),
                               _logits(Transformer(model.cfg), {"params": trained}, tokens), atol=1e-4)

    # A LoRA run as an adapter on the HF base: its checkpointed adapter, on the shared base weights.
    config = base_config()
    config.peft.method = "lora"
    lora = Transformer(dirs.cfg, peft=spec_from_config(config.peft))
    adapters = _noisy(init_adapters(lora, dirs.params, jax.random.PRNGKey(3)), seed=4, scale=0.5)
    _run_dir(tmp_path / "lora_run", chat_tokenizer_dir, adapters, method="lora")
    served = serving.load_served(str(dirs.model), {"sql": str(tmp_path / "lora_run")})
    assert served.names == ["model", "sql"] and served.info["sql"]["step"] == 3
    model, variables = served.models["sql"]
    assert variables["params"] is served.models["model"][1]["params"]  # one copy of the base
    want = _logits(lora, {"params": dirs.params, **adapters}, tokens)
    np.testing.assert_allclose(_logits(model, variables, tokens), want, atol=1e-4)
    assert np.abs(want - _logits(Transformer(dirs.cfg), {"params": dirs.params}, tokens)).max() > 1e-2


def test_bad_paths_and_names_are_named(dirs, tmp_path):
    with pytest.raises(FileNotFoundError, match="model path"):
        serving.load_served(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="differ from the base"):
        serving.load_served(str(dirs.model), {"model": str(dirs.adapter)})
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        serving.load_served(str(dirs.model), {"x": str(tmp_path / "empty")})


# ----------------------------------------------------------------------------- pure helpers

def test_streamable_holds_back_partial_characters_and_stop_prefixes():
    from codejax.server.scheduler import streamable
    assert streamable("abc\ufffd", ()) == "abc"  # a multi-byte character still arriving
    assert streamable("hello wor", ("world",)) == "hello"  # "wor" may become "world": 4 chars held back
    assert streamable("hello world and more", ("world",)) == "hello "  # found: cut before it, never past
    assert streamable("abc", ("xy",)) == "ab"


def test_batches_take_the_oldest_group_and_pad_to_powers_of_two():
    from codejax.server.openai_api import GroupKey, Job
    from codejax.server.scheduler import padded_rows, take_batch
    a, b = GroupKey("m", 16, 0.0, 1.0, 0, (), (1,)), GroupKey("m", 32, 0.0, 1.0, 0, (), (1,))
    jobs = [Job(a, [[1]]), Job(b, [[1]]), Job(a, [[1]], n=2), Job(a, [[1]], n=4)]
    batch, rest = take_batch(jobs, max_batch=4)
    assert batch == jobs[0:1] + jobs[2:3] and rest == [jobs[1], jobs[3]]  # rows 1 + 2; the 4-row job waits
    assert take_batch([Job(a, [[1]], n=9)], 4)[0][0].rows == 9  # a job larger than max_batch still runs
    assert [padded_rows(n) for n in (1, 2, 3, 5, 16, 17)] == [1, 2, 4, 8, 16, 32]


def test_the_batching_window_waits_for_a_trickle_of_requests_but_not_forever():
    from codejax.server.scheduler import window_close
    assert window_close(10.0, 10.0, 0.005) == pytest.approx(10.005)  # a lone request waits wait_s
    assert window_close(10.0, 10.012, 0.005) == pytest.approx(10.017)  # each arrival extends the window ...
    assert window_close(10.0, 10.018, 0.005) == pytest.approx(10.020)  # ... to at most 4 x wait_s


# ----------------------------------------------------------------------------- the synth job's HTTP backend

def test_synth_http_backend_against_the_server(server, ref):
    from codejax.synth import HttpBackend, Request

    backend = HttpBackend(f"http://127.0.0.1:{server.port}/v1", BASE, api_key="sk-do-not-leak", max_concurrency=4,
                          retries=1, backoff_s=0.01)
    chats = [Request(messages=(("user", CHAT[0]["content"]),), max_tokens=TOKENS, temperature=0.0)] * 3
    out = backend.complete(chats + [Request(prompt=PROMPT, max_tokens=TOKENS, temperature=0.0)])
    assert [c.text for c in out] == [ref.run("chat", [CHAT]).texts[0]] * 3 + [ref.run("completion", [PROMPT]).texts[0]]
    assert all(not c.error and c.completion_tokens > 0 and c.prompt_tokens > 0 for c in out)
    # the request's own errors come back as errors (not exceptions), final, and never carry the key
    wrong = HttpBackend(f"http://127.0.0.1:{server.port}/v1", "no-such-model", api_key="sk-do-not-leak", retries=1)
    [missing] = wrong.complete([Request(prompt="x", max_tokens=4)])
    [too_long] = backend.complete([Request(prompt="x " * MAX_LEN, max_tokens=4)])
    assert "HTTP 404" in missing.error and missing.final and BASE in missing.error
    assert "HTTP 400" in too_long.error and too_long.final
    for text in (missing.error, too_long.error, backend.name, wrong.name):
        assert "sk-do-not-leak" not in text


def test_synth_http_backend_retries_a_dead_or_closing_endpoint():
    from codejax.synth import HttpBackend, Request

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    start = time.monotonic()
    [c] = HttpBackend(f"http://127.0.0.1:{dead}/v1", "m", retries=2, backoff_s=0.05).complete([Request(prompt="x")])
    assert "cannot reach" in c.error and not c.final and time.monotonic() - start >= 0.05 + 0.1
    # a server that accepts and closes the connection at once: retried, then a clear error
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted = []

    def close_all():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(1)
            conn.close()
    threading.Thread(target=close_all, daemon=True).start()
    try:
        [c] = HttpBackend(f"http://127.0.0.1:{listener.getsockname()[1]}/v1", "m", retries=2,
                          backoff_s=0.01).complete([Request(prompt="x")])
    finally:
        listener.close()
    assert c.error and not c.final and len(accepted) == 3  # the first try and 2 retries


def test_synth_job_over_http(server, tmp_path):
    """run_synth with synth.backend=http against the real server: short prompt overrides fit its 128 tokens."""
    from codejax.synth import run_synth

    prompts = tmp_path / "prompts"
    (prompts / "diversify").mkdir(parents=True)
    (prompts / "diversify" / "paraphrase.txt").write_text("Reword: $instruction")
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"instruction": "Add two numbers.", "solution": "def add(a, b):\n    return a + b",
                                 "tests": "assert add(1, 2) == 3\nassert add(0, 0) == 0"}) + "\n")
    config = base_config()
    config.job = "synth"
    s = config.synth
    s.backend, s.url, s.http_model, s.api_key_env = "http", f"http://127.0.0.1:{server.port}/v1", BASE, ""
    s.methods, s.diversify_ops, s.items_per_method, s.max_new_tokens = "diversify", "paraphrase", 3, TOKENS
    s.prompts_dir, s.seed_path, s.min_instruction_chars, s.min_prose_fraction = str(prompts), str(seeds), 1, 0.0
    config.train.progress_bar = False
    summary = run_synth(config, str(tmp_path / "run"))
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    g = report["generation"]["diversify"]
    assert summary["backend"].startswith("http:") and g["requests"] == 3 and g["errors"] == 0
    assert g["completion_tokens"] > 0 and report["candidates"] + sum(
        n for n in g["eliminated_in_method"].values()) == 3
