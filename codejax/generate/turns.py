"""Multi-turn sampling: the policy writes a turn, a tool (or environment) answers, the policy goes on.

    episodes = generate_turns(model, variables, tokenizer, prompt_ids, params, respond, max_turns=4)

`respond(rows, texts, last)` gets, for the sequences whose assistant turn just ended (EOS), the
turn's text, and returns the reply to each: a string (a `tool` turn is appended and the sequence
continues) or None (the episode is over). `last[i]` says the turn was the episode's last
(`max_turns` reached): the reply is then not appended, but `respond` still sees the turn (the
unit-test environment scores the final submission).

How it works: the decode loop of codejax.generate.sampler, with two additions.
- Every sequence writes at its own length, and a finished or paused sequence writes nothing
  (its cache slots stay masked), so sequences end turns at different times and the batch keeps
  decoding the others: no barrier per turn.
- A reply goes in as *forced tokens*: the next decode steps of that sequence feed the reply's
  tokens instead of samples (one per step, as the other sequences decode), marked 0 in
  `sampled_mask`. The reply tokens are the chat template's own rendering of the tool turn plus
  the next assistant header, so training sees the tokens a rendered conversation has.
Tools run on the host between decode chunks (`chunk_size` steps, 16 by default here): a
sequence that ends its turn mid-chunk waits at most that long. `respond` receives every
sequence that ended a turn in the chunk at once, so it can run their tools in parallel.

Budgets: `params.max_new_tokens` counts every token after the prompt (turns and replies); a
reply that does not fit ends the episode as "length". A reply longer than `max_reply_tokens`
is cut (its text, with a note saying how much was cut).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import jax.numpy as jnp
import numpy as np

from codejax.generate.sampler import SamplingParams, Samples, _decode_chunk, encode_prompts, start, static_params

Respond = Callable[[list[int], list[str], list[bool]], list]


@dataclasses.dataclass
class Episodes(Samples):
    """Samples (tokens = every token after the prompt: turns and replies) plus the turn structure.
    `texts` are the final assistant turns (what answer rewards read)."""

    sampled_mask: list[list[int]] = dataclasses.field(default_factory=list)  # 1 = the policy's token
    turns: list[list[str]] = dataclasses.field(default_factory=list)  # each assistant turn's text
    replies: list[list[str]] = dataclasses.field(default_factory=list)  # each appended reply's text
    transcripts: list[str] = dataclasses.field(default_factory=list)  # the whole episode, special tokens kept


def reply_wrapper(tokenizer) -> tuple[str, str]:
    """(text between the assistant's end-of-turn token and a tool turn, a tool turn with '{}' as its content and
    the next assistant header), from the tokenizer's chat template."""
    marker = "\x00CONTENT\x00"
    convo = tokenizer.apply_chat_template([{"role": "user", "content": "u"}, {"role": "assistant", "content": marker}],
                                          tokenize=False)
    after = convo[convo.index(marker) + len(marker):]
    eos = tokenizer.decode([tokenizer.eos_token_id]) if tokenizer.eos_token_id is not None else ""
    end_of_turn = next((t for t in ("<|im_end|>", "<|eot_id|>", "<|end|>", eos) if t and after.startswith(t)), "")
    tool = tokenizer.apply_chat_template([{"role": "tool", "content": marker}], add_generation_prompt=True,
                                         tokenize=False)
    return after[len(end_of_turn):], tool.replace("{", "{{").replace("}", "}}").replace(marker, "{}")


def encode_reply(tokenizer, wrapper: tuple[str, str], text: str, limit: int) -> list[int]:
    """The reply's tokens (separator, tool turn, next assistant header), with its text cut to fit `limit`."""
    sep, turn = wrapper
    cut = text
    for _ in range(20):
        ids = list(tokenizer(sep + turn.format(cut), add_special_tokens=False)["input_ids"])
        if len(ids) <= limit:
            return ids
        keep = max(0, int(len(cut) * limit / len(ids)) - 40)
        cut = text[:keep] + f"\n... [{len(text) - keep} characters cut]"
    raise ValueError(f"a tool reply does not fit in {limit} tokens even when emptied; raise max_reply_tokens")


def generate_turns(model, variables: dict, tokenizer, prompts: Sequence[str | Sequence[int]],
                   params: SamplingParams, respond: Respond, *, max_turns: int,
                   max_reply_tokens: int = 128, pad_id: int | None = None) -> Episodes:
    """Sample `params.n` episodes per prompt; see the module docstring."""
    if max_turns < 1:
        raise ValueError(f"max_turns={max_turns}; must be >= 1")
    if params.stop:
        raise ValueError("multi-turn sampling ends turns at the end-of-turn token; stop strings are not supported")
    rows = [ids for ids in encode_prompts(tokenizer, prompts) for _ in range(params.n)]
    n = len(rows)
    wrapper = reply_wrapper(tokenizer)
    carry, eos = start(model, variables, tokenizer, rows, params, pad_id,
                       extra_slots=max_turns * params.chunk_size, forced_width=max_reply_tokens)
    eos_set = set(np.asarray(eos).tolist())
    static = static_params(params)
    turn_start = np.zeros(n, int)
    turns: list[list[str]] = [[] for _ in range(n)]
    replies: list[list[str]] = [[] for _ in range(n)]
    reasons: list[str | None] = [None] * n
    while True:
        carry = _decode_chunk(model, variables, carry, static, eos, params.chunk_size)
        done, lengths = np.asarray(carry["done"]), np.asarray(carry["lengths"])
        out = np.asarray(carry["out_tokens"])
        ended = [r for r in np.flatnonzero(done) if reasons[r] is None]
        slots_left = int(carry["slot"]) < carry["key_mask"].shape[1]
        texts, last, asked = [], [], []
        for r in ended:
            toks = out[r, turn_start[r]:lengths[r]].tolist()
            hit_eos = bool(toks) and toks[-1] in eos_set
            turns[r].append(tokenizer.decode([t for t in toks if t not in eos_set], skip_special_tokens=True))
            if not hit_eos:
                reasons[r] = "length"
                continue
            asked.append(r)
            texts.append(turns[r][-1])
            last.append(len(turns[r]) >= max_turns)
        answers = respond(asked, texts, last) if asked else []
        if len(answers) != len(asked):
            raise ValueError(f"respond() returned {len(answers)} replies for {len(asked)} turns")
        resume = []
        for r, reply, final in zip(asked, answers, last):
            if reply is None or final:
                reasons[r] = "eos"
                continue
            ids = encode_reply(tokenizer, wrapper, str(reply), max_reply_tokens)
            if lengths[r] + len(ids) >= params.max_new_tokens:
                reasons[r] = "length"  # no room for the reply and another turn
                continue
            replies[r].append(str(reply))
            resume.append((r, ids))
        if resume:
            forced, forced_len, forced_pos = (np.array(carry[k]) for k in ("forced", "forced_len", "forced_pos"))
            done = done.copy()
            for r, ids in resume:
                forced[r, :len(ids)] = ids
                forced_len[r], forced_pos[r] = len(ids), 0
                done[r] = False
                turn_start[r] = lengths[r] + len(ids)
            carry = {**carry, "forced": jnp.asarray(forced), "forced_len": jnp.asarray(forced_len),
                     "forced_pos": jnp.asarray(forced_pos), "done": jnp.asarray(done)}
        if all(x is not None for x in reasons):
            break
        if not slots_left:  # the cache is full: what is still running ends here
            for r in range(n):
                if reasons[r] is None:
                    turns[r].append(tokenizer.decode(out[r, turn_start[r]:lengths[r]].tolist(), skip_special_tokens=True))
                    reasons[r] = "length"
            break
    return _episodes(carry, rows, params, tokenizer, turns, replies, reasons)


def _episodes(carry, rows, params, tokenizer, turns, replies, reasons) -> Episodes:
    out, logprobs, lengths, sampled = (np.asarray(carry[k]) for k in
                                       ("out_tokens", "out_logprobs", "lengths", "out_sampled"))
    result = Episodes([], [], [], [], [], [])
    for r, prompt in enumerate(rows):
        toks = out[r, :lengths[r]].tolist()
        result.tokens.append(toks)
        result.logprobs.append(logprobs[r, :len(toks)].tolist())
        result.sampled_mask.append(sampled[r, :len(toks)].astype(int).tolist())
        result.texts.append(turns[r][-1] if turns[r] else "")
        result.finish_reasons.append(reasons[r])
        result.prompt_index.append(r // params.n)
        result.prompt_tokens.append(list(prompt))
        result.turns.append(turns[r])
        result.replies.append(replies[r])
        result.transcripts.append(tokenizer.decode(toks, skip_special_tokens=False))
    return result
