"""Preference pairs -> checked, tokenized, fixed-length pair batches (jobs `reward` and `dpo`).

Rows are read and checked by the same loop as the LM data (`codejax.data.pipeline.read_checked`).

Accepted rows (TRL's preference formats; field names from config.preference):

* explicit prompt, text: ``{"prompt": str, "chosen": str, "rejected": str}``;
* explicit prompt, chat: ``{"prompt": [messages], "chosen": [assistant message(s)], "rejected": [...]}``;
* implicit prompt, chat: ``{"chosen": [conversation], "rejected": [conversation]}``: the prompt
  is the longest run of leading messages the two share, which must end before an assistant turn;
* ``{"chosen": str, "rejected": str}``: an empty prompt.

Tokenization follows the SFT formats (codejax.data.formats): a text prompt is tokenized on its
own and each completion in context (`encode_completions`; no BPE merge across the boundary, a
BOS, if any, once at the start)
and the completion ends with EOS; chat rows are rendered by the tokenizer's chat template, the
prompt with the generation prompt appended, and the loss mask is the template's assistant
mask on the tokens after the prompt. A template that does not render the prompt as a prefix
of the whole conversation is an error naming the row.

Batches hold two row sets in the layout of codejax.data.packing, prefixed ``chosen_`` and
``rejected_`` (``inputs``, ``targets``, ``weights``, ``segment_ids``, ``positions``; one pair per
row, right-padded to seq_len), plus ``margin`` [batch] (the optional per-pair margin). With
``shift=False`` (the reward model), ``inputs`` are the whole sequence, not shifted, so the last
real position is the last token (EOS) itself. Padding pairs of a last eval batch have zero
weights everywhere.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator

import grain
import jax.numpy as jnp
import numpy as np

from codejax.data import errors, sources
from codejax.data.builtin import BUILTIN
from codejax.data.errors import DataError, SkipPolicy
from codejax.data.formats import encode_completions, encode_texts, parse_messages, require_string
from codejax.data.packing import ROW_KEYS, pad_row, padding_row, to_training_row
from codejax.data.pipeline import READ_OPTIONS, StateCheckedIterDataset, mixed_seed, read_checked

log = logging.getLogger(__name__)

SIDES = ("chosen", "rejected")


@dataclasses.dataclass(frozen=True)
class Pair:
    """One tokenized pair: the shared prompt ids, each completion's ids and loss mask, a margin."""

    prompt: np.ndarray  # int32
    chosen: np.ndarray
    chosen_mask: np.ndarray  # uint8, 1 on tokens that count (the completion, EOS included)
    rejected: np.ndarray
    rejected_mask: np.ndarray
    margin: float = 0.0


@dataclasses.dataclass(frozen=True)
class PreferenceFields:
    prompt: str = "prompt"
    chosen: str = "chosen"
    rejected: str = "rejected"
    margin: str = ""  # '' = no margin column


# ------------------------------------------------------------------------------------ parse

def _messages(value, where: str, field: str) -> list[dict]:
    """A message list, checked like SFT chat rows (but without requiring an assistant turn)."""
    if not isinstance(value, list):
        raise DataError(where, field, f"expected a string or a list of messages, got "
                        f"{errors.json_type_name(value)}", errors.WRONG_TYPE)
    try:
        return parse_messages({"messages": value + [{"role": "assistant", "content": "x"}]}, where)[:-1]
    except DataError as e:  # name the real field, not the wrapper's "messages"
        raise DataError(where, e.field.replace("messages", field, 1) if e.field else field, e.problem,
                        e.reason) from None


def parse_pair(row: dict, where: str, fields: PreferenceFields):
    """(prompt, chosen, rejected, margin): all strings, or a message list and two message lists."""
    margin = 0.0
    if fields.margin:
        value = row.get(fields.margin)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DataError(where, fields.margin, f"expected a number, got {errors.json_type_name(value)}",
                            errors.WRONG_TYPE if fields.margin in row else errors.MISSING_FIELD)
        margin = float(value)
    for name in (fields.chosen, fields.rejected):
        if name not in row:
            raise DataError(where, name, "missing", errors.MISSING_FIELD)
    chosen, rejected = row[fields.chosen], row[fields.rejected]
    if isinstance(chosen, str) or isinstance(rejected, str):
        prompt = require_string(row, fields.prompt, where, allow_empty=True) if fields.prompt in row else ""
        return (prompt, require_string(row, fields.chosen, where), require_string(row, fields.rejected, where),
                margin)
    chosen, rejected = _messages(chosen, where, fields.chosen), _messages(rejected, where, fields.rejected)
    if fields.prompt in row:
        prompt = _messages(row[fields.prompt], where, fields.prompt)
    else:  # implicit prompt: the shared leading turns
        shared = 0
        while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
            shared += 1
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
    for name, turns in ((fields.chosen, chosen), (fields.rejected, rejected)):
        if not turns or turns[0]["role"] != "assistant" or not turns[0]["content"]:
            raise DataError(where, name, "the completion must start with a non-empty assistant turn "
                            "after the prompt (or the shared leading turns)", errors.NO_ASSISTANT_TURN)
    return prompt, chosen, rejected, margin


# --------------------------------------------------------------------------------- tokenize

def _chat_ids(tokenizer, conversations: list[list[dict]], **kw):
    return tokenizer.apply_chat_template(conversations, tokenize=True, return_dict=True, **kw)


def tokenize_pairs(tokenizer, parsed: list[tuple], wheres: list[str]) -> list[Pair]:
    """Tokenize parsed pairs (see the module docstring); text and chat pairs may be mixed."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id; every completion must end with one")
    bos = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    out: list[Pair | None] = [None] * len(parsed)
    text = [i for i, p in enumerate(parsed) if isinstance(p[1], str)]
    chat = [i for i, p in enumerate(parsed) if not isinstance(p[1], str)]
    if text:
        prompt_texts = [parsed[i][0] for i in text]
        prompts = encode_texts(tokenizer, prompt_texts)
        completions = {side: encode_completions(tokenizer, prompt_texts, [parsed[i][k] for i in text], prompts)
                       for k, side in enumerate(SIDES, 1)}
        for j, i in enumerate(text):
            c, r = completions["chosen"][j] + [eos], completions["rejected"][j] + [eos]
            out[i] = Pair(np.asarray(bos + prompts[j], np.int32), np.asarray(c, np.int32), np.ones(len(c), np.uint8),
                          np.asarray(r, np.int32), np.ones(len(r), np.uint8), parsed[i][3])
    if chat:
        prompts = _chat_ids(tokenizer, [parsed[i][0] for i in chat], add_generation_prompt=True)["input_ids"]
        sides = {side: _chat_ids(tokenizer, [parsed[i][0] + parsed[i][k] for i in chat],
                                 return_assistant_tokens_mask=True) for k, side in enumerate(SIDES, 1)}
        for j, i in enumerate(chat):
            p = prompts[j]
            parts = {}
            for side in SIDES:
                ids, mask = sides[side]["input_ids"][j], sides[side]["assistant_masks"][j]
                if ids[:len(p)] != p:
                    raise DataError(wheres[i], side, "the chat template does not render the prompt (with its "
                                    "generation prompt) as a prefix of the whole conversation, so the "
                                    "completion tokens are not well defined", "chat_template_mismatch")
                parts[side] = (np.asarray(ids[len(p):], np.int32), np.asarray(mask[len(p):], np.uint8))
                if not parts[side][1].any():
                    raise ValueError("the tokenizer's chat template marks no assistant tokens; it needs "
                                     "{% generation %} blocks around assistant replies for loss masks")
            out[i] = Pair(np.asarray(p, np.int32), *parts["chosen"], *parts["rejected"], parsed[i][3])
    return out


def fit_pair(pair: Pair, seq_len: int, max_prompt_len: int) -> tuple[Pair | None, bool]:
    """Fit prompt + each completion into seq_len + 1 ids (a training row's shifted length).

    Over-long pairs keep the *last* max_prompt_len prompt tokens (the part next to the answer)
    and cut completions on the right. Returns (pair or None when nothing to learn is left, truncated?).
    """
    budget = seq_len + 1
    longest = max(len(pair.chosen), len(pair.rejected))
    if len(pair.prompt) + longest <= budget:
        return pair, False
    prompt = pair.prompt[-max_prompt_len:] if len(pair.prompt) > max_prompt_len else pair.prompt
    room = budget - len(prompt)
    fitted = dataclasses.replace(pair, prompt=prompt, chosen=pair.chosen[:room], chosen_mask=pair.chosen_mask[:room],
                                 rejected=pair.rejected[:room], rejected_mask=pair.rejected_mask[:room])
    if not fitted.chosen_mask.any() or not fitted.rejected_mask.any():
        return None, True
    return fitted, True


def pair_row(pair: Pair, seq_len: int, pad_id: int, shift: bool = True) -> dict[str, np.ndarray]:
    """The batch row of one pair: ``chosen_*`` and ``rejected_*`` arrays of seq_len, and ``margin``."""
    row = {"margin": np.float32(pair.margin)}
    for side in SIDES:
        ids = np.concatenate([pair.prompt, getattr(pair, side)])
        mask = np.concatenate([np.zeros(len(pair.prompt), np.uint8), getattr(pair, f"{side}_mask")])
        if shift:
            fields = to_training_row((ids, mask))
        else:  # the whole sequence as input: a reward head reads the last real token (EOS)
            ids, mask = ids[:seq_len], mask[:seq_len]
            fields = {"inputs": ids, "targets": ids, "weights": mask.astype(np.float32)}
        for key, value in pad_row(fields, seq_len, pad_id).items():
            row[f"{side}_{key}"] = value
    return row


def padding_pair(seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
    row = {"margin": np.float32(0.0)}
    for side in SIDES:
        row.update({f"{side}_{k}": v for k, v in padding_row(seq_len, pad_id).items()})
    return row


# --------------------------------------------------------------------------------- datasets

@dataclasses.dataclass(frozen=True)
class PairDatasets:
    """Like codejax.data.Datasets, for pairs: a checkpointable train pipeline, an eval pass, stats."""

    train: grain.IterDataset
    eval: Callable[[], Iterator[dict]] | None
    stats: dict[str, int]
    train_pairs: list[Pair]
    eval_pairs: list[Pair]


def load_pairs(paths, tokenizer, fields: PreferenceFields, policy: SkipPolicy, hf_split: str = "train"
               ) -> tuple[list[Pair], int]:
    return read_checked(paths, lambda row, where: parse_pair(row, where, fields),
                        lambda parsed, wheres: _tokenize_or_skip(tokenizer, parsed, wheres, policy),
                        hf_split=hf_split, policy=policy)


def _tokenize_or_skip(tokenizer, parsed, wheres, policy) -> list[Pair]:
    try:
        return tokenize_pairs(tokenizer, parsed, wheres)
    except DataError:  # find the offending rows one at a time
        kept = []
        for p, w in zip(parsed, wheres):
            try:
                kept.extend(tokenize_pairs(tokenizer, [p], [w]))
            except DataError as e:
                policy.handle(e)
        return kept


def fit_pairs(pairs: list[Pair], seq_len: int, max_prompt_len: int) -> tuple[list[Pair], dict[str, int]]:
    kept, stats = [], Counter(pairs=0, pairs_truncated=0, pairs_dropped_no_completion=0)
    for pair in pairs:
        fitted, truncated = fit_pair(pair, seq_len, max_prompt_len)
        stats["pairs_truncated"] += truncated
        if fitted is None:
            stats["pairs_dropped_no_completion"] += 1
        else:
            kept.append(fitted)
    stats["pairs"] = len(kept)
    return kept, dict(stats)


def split_pairs(pairs: list[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """A seeded hold-out by content hash: identical pairs land on the same side."""
    def score(p: Pair) -> bytes:
        h = hashlib.blake2b(str(seed).encode(), digest_size=8)
        for a in (p.prompt, p.chosen, p.rejected):
            h.update(a.tobytes() + b"|")
        return h.digest()
    order = sorted(range(len(pairs)), key=lambda i: score(pairs[i]))
    n_eval = max(1, round(fraction * len(pairs)))
    held = set(order[:n_eval])
    if len(held) == len(pairs):
        raise ValueError(f"eval_fraction={fraction} of {len(pairs)} pairs leaves no training pairs")
    return [p for i, p in enumerate(pairs) if i not in held], [p for i, p in enumerate(pairs) if i in held]


def build_pair_datasets(*, tokenizer, train_paths, eval_paths=None, seq_len: int, batch_size: int,
                        eval_batch_size: int | None = None, eval_fraction: float = 0.0, seed: int = 0,
                        shuffle: bool = True, max_prompt_len: int = 0, skip_bad_rows: bool = False,
                        fields: PreferenceFields = PreferenceFields(), shift: bool = True,
                        hf_split: str = "train", extra: Callable[[list[dict]], list[dict]] | None = None
                        ) -> PairDatasets:
    """Train (shuffled, repeated, batched, checkpointable) and eval (one fixed pass) pair pipelines.

    ``extra(rows)`` may return, per pair row, a dict of more arrays to merge into it (e.g.
    precomputed reference log-probs); it sees the train rows and the eval rows, once each.
    """
    if seq_len < 2 or batch_size < 1:
        raise ValueError(f"need seq_len >= 2 and batch_size >= 1, got {seq_len} and {batch_size}")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    policy = SkipPolicy(skip_bad_rows)
    train, rows_read = load_pairs(train_paths, tokenizer, fields, policy, hf_split)
    held_out: list[Pair] = []
    if eval_paths:
        held_out, n = load_pairs(eval_paths, tokenizer, fields, policy, hf_split)
        rows_read += n
    elif eval_fraction > 0 and train:
        train, held_out = split_pairs(train, eval_fraction, seed)
    max_prompt_len = max_prompt_len or seq_len // 2
    train, stats = fit_pairs(train, seq_len, max_prompt_len)
    held_out, eval_stats = fit_pairs(held_out, seq_len, max_prompt_len)
    stats.update({f"eval_{k}": v for k, v in eval_stats.items()}, rows_read=rows_read, **policy.counts)
    stats.setdefault("rows_skipped", 0)
    if not train:
        raise ValueError(f"no training pairs left from {train_paths!r} (stats: {stats})")
    to_row = functools.partial(pair_row, seq_len=seq_len, pad_id=pad_id, shift=shift)

    def rows(pairs: list[Pair]) -> list[dict]:
        built = [to_row(p) for p in pairs]
        if extra is not None and built:
            for row, more in zip(built, extra(built)):
                row.update(more)
        return built

    train_rows = rows(train)
    ds = grain.MapDataset.source(train_rows)
    if shuffle:
        ds = ds.shuffle(seed=mixed_seed(seed))
    ds = ds.repeat(None).to_iter_dataset(READ_OPTIONS).batch(batch_size, drop_remainder=True)
    digest = hashlib.blake2b(digest_size=8)
    for p in train:
        for a in (p.prompt, p.chosen, p.rejected):
            digest.update(a.tobytes())
    fingerprint = hashlib.blake2b(json.dumps(dict(data=digest.hexdigest(), seq_len=seq_len, batch=batch_size,
                                                  seed=seed, shuffle=shuffle, shift=shift)).encode(),
                                  digest_size=8).hexdigest()
    eval_fn = _eval_batches(rows(held_out), eval_batch_size or batch_size, padding_pair(seq_len, pad_id)) \
        if held_out else None
    log.info("preference data: %s", stats)
    return PairDatasets(StateCheckedIterDataset(ds, fingerprint), eval_fn, {k: int(v) for k, v in stats.items()},
                        train, held_out)


def pair_datasets_from_config(config, tokenizer, *, shift: bool, extra=None) -> PairDatasets:
    """`build_pair_datasets` for a run's config: its `data` and `preference` sections and seed."""
    dc, pc = config.data, config.preference
    if not dc.train_paths:
        raise ValueError("data.train_paths is empty: give preference rows ({prompt, chosen, rejected} JSONL, ...) "
                         "(or data.train_paths=builtin for codejax's small built-in pairs)")
    if dc.train_paths == BUILTIN or dc.train_paths.startswith(BUILTIN + ":"):
        raise ValueError("data.train_paths='builtin' is resolved by the job runner (codejax.jobs.get_job); in your "
                         "own code pass config through codejax.builtin.resolve_builtin_data(config, 'pairs') first")
    eval_paths = sources.split_paths(dc.eval_paths) or None
    fields = PreferenceFields(pc.prompt_field, pc.chosen_field, pc.rejected_field, pc.margin_field)
    return build_pair_datasets(
        tokenizer=tokenizer, train_paths=sources.split_paths(dc.train_paths), eval_paths=eval_paths,
        seq_len=dc.seq_len, batch_size=dc.batch_size, eval_batch_size=dc.eval_batch_size or None,
        eval_fraction=0.0 if eval_paths else dc.eval_fraction, seed=config.seed, shuffle=dc.shuffle,
        max_prompt_len=pc.max_prompt_len, skip_bad_rows=dc.skip_bad_rows, fields=fields, shift=shift,
        hf_split=dc.hf_split, extra=extra)


def _eval_batches(rows: list[dict], batch_size: int, filler: dict) -> Callable[[], Iterator[dict]]:
    """A fresh pass over `rows` on every call; padding pairs get zeros for any extra keys."""
    filler = {**filler, **{k: np.zeros_like(v) for k, v in rows[0].items() if k not in filler}}
    return lambda: batch_rows(rows, batch_size, filler)


def batch_rows(rows: list[dict], batch_size: int, filler: dict) -> Iterator[dict]:
    """Stack rows into batches in order, the last one filled out with `filler` rows."""
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        chunk = chunk + [filler] * (batch_size - len(chunk))
        yield {k: np.stack([r[k] for r in chunk]) for k in chunk[0]}


def both_sides(batch: dict) -> dict:
    """Chosen rows then rejected rows, stacked into one LM batch of 2x rows (one forward pass)."""
    return {k: jnp.concatenate([batch[f"chosen_{k}"], batch[f"rejected_{k}"]]) for k in ROW_KEYS}
