"""Batched sampling with a KV cache: jitted prefill, then jitted decode chunks.

    from codejax.generate import SamplingParams, generate
    out = generate(model, variables, tokenizer, ["def add(a, b):"], SamplingParams(max_new_tokens=64))
    out.texts[0], out.logprobs[0]

How it works
- Prompts are left-padded to a common length (rounded up to a bucket so few
  shapes compile), so every row writes the same cache slot at each step and
  the decode step is one [batch, 1] forward pass. Positions count real tokens
  only, so a padded row computes exactly what it would alone.
- Decoding runs in jitted chunks of `chunk_size` steps (a `lax.while_loop`
  that exits early once every row has finished). Between chunks the host
  decodes the new text and checks stop strings, so a row that printed a stop
  string stops without waiting for EOS or the token budget.
- Per-token log-probs are log-softmax of the model's raw logits (temperature
  1, no top-k/top-p): the same numbers a training forward pass gives for the
  sampled tokens, which is what RL's importance ratios and KL terms need.
- PEFT: `variables` may carry any adapter collection. Prefix tuning works as
  is; a prompt-tuning soft prompt takes the first P cache slots.
- Streaming: `on_chunk(tokens, lengths)` is called on the host after every
  decode chunk with the completion tokens so far ([batch, max_new_tokens],
  row r valid up to lengths[r]), so a server can send text while the batch is
  still decoding (codejax/serve.py). Without it nothing extra leaves the device.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from codejax.models.transformer import Transformer, init_cache


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    n: int = 1  # samples per prompt
    stop: tuple[str, ...] = ()  # stop strings: the text is cut before the first one
    eos_ids: tuple[int, ...] | None = None  # None = the tokenizer's eos (and the model config's)
    chunk_size: int = 32  # decode steps per jitted call between host-side stop checks
    seed: int = 0

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens}; must be >= 1")
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature}; must be >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p}; must be in (0, 1]")
        if self.top_k < 0 or self.n < 1:
            raise ValueError(f"top_k={self.top_k} and n={self.n} must be >= 0 and >= 1")


@dataclasses.dataclass
class Samples:
    """Row i is sample i % n of prompt i // n."""

    tokens: list[list[int]]  # completion tokens (up to and including EOS / the stop string's tokens)
    logprobs: list[list[float]]  # one per completion token
    texts: list[str]  # decoded completion, cut before a stop string, without EOS
    finish_reasons: list[str]  # "eos" | "stop" | "length"
    prompt_index: list[int]
    prompt_tokens: list[list[int]]


def _bucket(n: int, multiple: int = 16) -> int:
    return max(multiple, int(math.ceil(n / multiple)) * multiple)


def sample_logits(logits: jnp.ndarray, rng: jax.Array, temperature: float, top_k: int, top_p: float):
    """One token per row from float32 logits [batch, vocab] (greedy when temperature == 0)."""
    if temperature == 0:
        return jnp.argmax(logits, axis=-1)
    logits = logits / temperature
    if top_k:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        # Keep a token if the mass before it is below top_p (the first token always stays).
        keep_sorted = (jnp.cumsum(probs, axis=-1) - probs) < top_p
        keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
        logits = jnp.where(keep, logits, -jnp.inf)
    return jax.random.categorical(rng, logits, axis=-1)


@functools.partial(jax.jit, static_argnames=("model",))
def _prefill(model: Transformer, variables, tokens, positions, key_mask, cache):
    logits, cache = model.apply(variables, tokens, positions, cache=cache, cache_index=0, key_mask=key_mask)
    return logits[:, -1], cache


@functools.partial(jax.jit, static_argnames=("model", "params", "steps"), donate_argnames=("carry",))
def _decode_chunk(model: Transformer, variables, carry, params: SamplingParams, eos: jnp.ndarray, steps: int):
    """Up to `steps` decode steps; stops early when every row is done."""

    def cond(c):
        return (c["i"] < steps) & ~jnp.all(c["done"]) & (c["slot"] < c["key_mask"].shape[1])

    def body(c):
        rng, step_rng = jax.random.split(c["rng"])
        sampled = sample_logits(c["logits"], step_rng, params.temperature, params.top_k, params.top_p)
        # Forced tokens (a tool's reply, fed by the multi-turn driver) replace the sample until used up.
        forcing = c["forced_pos"] < c["forced_len"]
        width = c["forced"].shape[1]
        forced = jnp.take_along_axis(c["forced"], jnp.minimum(c["forced_pos"], width - 1)[:, None], axis=1)[:, 0]
        live = ~c["done"]
        token = jnp.where(live, jnp.where(forcing, forced, sampled), 0).astype(jnp.int32)
        logprob = jnp.take_along_axis(jax.nn.log_softmax(c["logits"], axis=-1), token[:, None], axis=-1)[:, 0]
        # Each row writes at its own length; a finished (or paused) row writes nothing (index out of range).
        rows = jnp.arange(token.shape[0])
        at = jnp.where(live, c["lengths"], params.max_new_tokens)
        out_tokens = c["out_tokens"].at[rows, at].set(token, mode="drop")
        out_logprobs = c["out_logprobs"].at[rows, at].set(jnp.where(forcing, 0.0, logprob), mode="drop")
        out_sampled = c["out_sampled"].at[rows, at].set(~forcing, mode="drop")
        lengths = c["lengths"] + live
        done = c["done"] | (live & ~forcing & jnp.isin(token, eos)) | (lengths >= params.max_new_tokens)
        slot = c["slot"]
        # Only a live row's token enters its context: a paused row's slot stays masked, so it resumes
        # exactly where it stopped.
        key_mask = c["key_mask"].at[:, slot].set(live)
        logits, cache = model.apply(variables, token[:, None], c["positions"][:, None], cache=c["cache"],
                                    cache_index=slot, key_mask=key_mask, prefill=False)
        return {**c, "rng": rng, "out_tokens": out_tokens, "out_logprobs": out_logprobs, "out_sampled": out_sampled,
                "lengths": lengths, "done": done, "key_mask": key_mask, "cache": cache, "logits": logits[:, 0],
                "positions": c["positions"] + live, "forced_pos": c["forced_pos"] + (live & forcing),
                "slot": slot + 1, "i": c["i"] + 1}

    carry = jax.lax.while_loop(cond, body, {**carry, "i": jnp.zeros((), jnp.int32)})
    return carry


def _eos_ids(params: SamplingParams, tokenizer, model: Transformer) -> tuple[int, ...]:
    if params.eos_ids is not None:
        return tuple(params.eos_ids)
    ids = set()
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    eos = model.cfg.eos_token_id
    ids.update(eos if isinstance(eos, tuple) else () if eos is None else (eos,))
    return tuple(sorted(ids))


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def encode_prompts(tokenizer, prompts: Sequence[str | Sequence[int]]) -> list[list[int]]:
    encoded = [list(tokenizer(p, add_special_tokens=False)["input_ids"]) if isinstance(p, str) else list(p)
               for p in prompts]
    for i, ids in enumerate(encoded):
        if not ids:
            raise ValueError(f"prompt {i} is empty after tokenization")
    return encoded


def start(model: Transformer, variables: dict, tokenizer, rows: list[list[int]], params: SamplingParams,
          pad_id: int | None, extra_slots: int = 0, forced_width: int = 1) -> tuple[dict, jnp.ndarray]:
    """Prefill `rows` (token ids, one per sequence); returns the decode carry and the EOS ids.
    The cache holds the prompts, `max_new_tokens` and `extra_slots` more decode steps."""
    batch = len(rows)
    spec = model.peft
    # A soft prompt (prompt tuning) takes the first cache slots, when its collection is passed.
    soft = spec.num_virtual_tokens if spec is not None and spec.layout.soft_prompt and spec.collection in variables else 0
    prompt_len = _bucket(max(map(len, rows)))
    total = soft + prompt_len + _bucket(params.max_new_tokens + extra_slots)
    if pad_id is None:
        pad_id = tokenizer.pad_token_id if tokenizer is not None and tokenizer.pad_token_id is not None else 0

    tokens = np.full((batch, prompt_len), pad_id, np.int32)
    valid = np.zeros((batch, prompt_len), bool)
    for r, ids in enumerate(rows):
        tokens[r, prompt_len - len(ids):] = ids
        valid[r, prompt_len - len(ids):] = True
    positions = np.maximum(np.cumsum(valid, axis=1) - 1, 0).astype(np.int32)
    key_mask = np.zeros((batch, total), bool)
    key_mask[:, :soft] = True
    key_mask[:, soft:soft + prompt_len] = valid

    cache = init_cache(model.cfg, batch, total)
    logits, cache = _prefill(model, variables, jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(key_mask),
                             cache)
    eos = jnp.asarray(_eos_ids(params, tokenizer, model) or (-1,), jnp.int32)
    carry = {
        "rng": jax.random.PRNGKey(params.seed), "logits": logits, "cache": cache,
        "key_mask": jnp.asarray(key_mask), "positions": jnp.asarray(valid.sum(1), jnp.int32),
        "slot": jnp.asarray(soft + prompt_len, jnp.int32),
        "done": jnp.zeros((batch,), bool), "lengths": jnp.zeros((batch,), jnp.int32),
        "out_tokens": jnp.zeros((batch, params.max_new_tokens), jnp.int32),
        "out_logprobs": jnp.zeros((batch, params.max_new_tokens), jnp.float32),
        "out_sampled": jnp.zeros((batch, params.max_new_tokens), bool),
        "forced": jnp.zeros((batch, forced_width), jnp.int32),
        "forced_len": jnp.zeros((batch,), jnp.int32), "forced_pos": jnp.zeros((batch,), jnp.int32),
    }
    return carry, eos


def static_params(params: SamplingParams) -> SamplingParams:
    """Only the decoding switches are compile-time constants: another seed, stop list or n must
    not recompile the decode loop (the eval job samples every batch with its own seed)."""
    return SamplingParams(max_new_tokens=params.max_new_tokens, temperature=params.temperature,
                          top_k=params.top_k, top_p=params.top_p)


def generate(model: Transformer, variables: dict, tokenizer, prompts: Sequence[str | Sequence[int]],
             params: SamplingParams = SamplingParams(), *, pad_id: int | None = None,
             on_chunk: Callable[[np.ndarray, np.ndarray], None] | None = None) -> Samples:
    """Sample `params.n` completions for each prompt (text or token ids). See the module docstring.

    on_chunk(tokens, lengths), if given, runs after each decode chunk with host arrays that are valid
    during the call only (copy what you keep: the next chunk may reuse the buffers). Tokens past a
    row's stop string or EOS can be there; the returned Samples are the cut result."""
    if not prompts:
        raise ValueError("generate() needs at least one prompt")
    rows = [ids for ids in encode_prompts(tokenizer, prompts) for _ in range(params.n)]
    carry, eos = start(model, variables, tokenizer, rows, params, pad_id)
    batch = len(rows)
    stopped = np.zeros(batch, bool)
    static = static_params(params)
    check_stops = bool(params.stop) and tokenizer is not None
    while True:
        carry = _decode_chunk(model, variables, carry, static, eos, params.chunk_size)
        done = np.asarray(carry["done"])
        if check_stops or on_chunk is not None:  # only then do the tokens leave the device mid-generation
            out, lengths = np.asarray(carry["out_tokens"]), np.asarray(carry["lengths"])
        if on_chunk is not None:
            on_chunk(out, lengths)
        if check_stops:  # rows whose text already holds a stop string are done
            for r in np.flatnonzero(~done):
                if _cut_at_stop(tokenizer.decode(out[r, :lengths[r]], skip_special_tokens=True), params.stop)[1]:
                    stopped[r] = True
            if stopped.any():
                carry["done"] = carry["done"] | jnp.asarray(stopped)
                done = done | stopped
        if done.all():
            break
    return _finish(carry, rows, params, tokenizer, eos)


def _finish(carry, rows, params: SamplingParams, tokenizer, eos) -> Samples:
    out, logprobs, lengths = (np.asarray(carry[k]) for k in ("out_tokens", "out_logprobs", "lengths"))
    eos_set = set(np.asarray(eos).tolist())
    result = Samples([], [], [], [], [], [])
    for r, prompt in enumerate(rows):
        toks = out[r, :lengths[r]].tolist()
        reason = "eos" if toks and toks[-1] in eos_set else "length"
        text = ""
        if tokenizer is not None:
            text = tokenizer.decode([t for t in toks if t not in eos_set], skip_special_tokens=True)
            text, hit = _cut_at_stop(text, params.stop)
            if hit:
                reason = "stop"
                toks = _tokens_covering(tokenizer, toks, text, params.stop)
        result.tokens.append(toks)
        result.logprobs.append(logprobs[r, :len(toks)].tolist())
        result.texts.append(text)
        result.finish_reasons.append(reason)
        result.prompt_index.append(r // params.n)
        result.prompt_tokens.append(list(prompt))
    return result


def _tokens_covering(tokenizer, toks: list[int], text: str, stops) -> list[int]:
    """The shortest token prefix whose text reaches the first stop string (it ends the completion)."""
    for end in range(1, len(toks) + 1):
        if _cut_at_stop(tokenizer.decode(toks[:end], skip_special_tokens=True), stops)[1]:
            return toks[:end]
    return toks


def greedy_reference(model: Transformer, variables: dict, prompt: Sequence[int], steps: int) -> list[int]:
    """Greedy decoding by re-running the full causal forward pass each step, without a cache (for tests).

    The sequence lives in a fixed buffer, so one compiled forward serves every
    step: causal attention means the unused tail never reaches earlier positions.
    """
    length = len(prompt) + steps
    forward = jax.jit(lambda v, t: model.apply(v, t))
    seq = np.zeros((1, length), np.int32)
    seq[0, :len(prompt)] = prompt
    for t in range(len(prompt), length):
        seq[0, t] = int(jnp.argmax(forward(variables, jnp.asarray(seq))[0, t - 1]))
    return seq[0, len(prompt):].tolist()
