"""Train a byte-level BPE tokenizer for code and package it as an ordinary HF tokenizer.

The output directory is what ``transformers.AutoTokenizer.from_pretrained`` expects
(``tokenizer.json``, ``tokenizer_config.json``, ``chat_template.jinja`` or the template
inside the config, depending on the transformers version), so models trained here can be
shared with, and evaluated by, standard tooling without any codejax-specific loader.

Special tokens get the first ids of the vocabulary, in this order (the order is part of the
on-disk format: changing it silently re-maps every checkpoint's embeddings):

====  ====================  ======================================================
 id   token                 role
====  ====================  ======================================================
 0    ``<|endoftext|>``     end of document; also ``eos_token`` and ``pad_token``
 1    ``<|im_start|>``      opens a chat turn (ChatML)
 2    ``<|im_end|>``        closes a chat turn; the assistant's end-of-turn token
 3    ``<|fim_prefix|>``    fill-in-the-middle sentinel, see :func:`fim_format`
 4    ``<|fim_middle|>``    fill-in-the-middle sentinel
 5    ``<|fim_suffix|>``    fill-in-the-middle sentinel
 6    ``<|fim_pad|>``       filler for FIM contexts that must keep a fixed length
====  ====================  ======================================================

Ids 7..262 are the 256 byte symbols, and merges follow. There is no BOS token
(``bos_token`` is ``None``): documents are separated by ``<|endoftext|>`` when packed, as
for GPT-2/Qwen, so a BOS would only spend a position on every sequence.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from codejax.corpus import list_source_files, read_source, stdlib_root

logger = logging.getLogger(__name__)

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
FIM_PREFIX = "<|fim_prefix|>"
FIM_MIDDLE = "<|fim_middle|>"
FIM_SUFFIX = "<|fim_suffix|>"
FIM_PAD = "<|fim_pad|>"

# Index in this tuple == token id; see the module docstring before reordering.
SPECIAL_TOKENS: tuple[str, ...] = (ENDOFTEXT, IM_START, IM_END, FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD)

NUM_BYTE_TOKENS = 256
MIN_VOCAB_SIZE = NUM_BYTE_TOKENS + len(SPECIAL_TOKENS)
DEFAULT_MODEL_MAX_LENGTH = 4096

# ChatML. Every piece is emitted through `{{- ... }}` because transformers compiles templates
# with trim_blocks/lstrip_blocks, which would otherwise eat literal newlines after tags.
# The assistant's content *and* its <|im_end|> sit inside {% generation %}: the model must
# learn to emit the end-of-turn token, but not the "<|im_start|>assistant\n" header, which
# the prompt (add_generation_prompt) always supplies at inference time.
# Tools (codejax/data/tools.py has the format and its parser): `tools=` schemas go in the system
# turn (after a given system message's content), one JSON line each; an assistant's `tool_calls`
# follow its content as <tool_call> JSON blocks, inside the generation mask; `tool` turns (the
# results) stay outside it. Without tools the output is what it was before tools were added.
CHAT_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages and messages[0].role == 'system' %}
        {{- messages[0].content ~ '\n\n' }}
    {%- endif %}
    {{- '# Tools\nCall a tool with a JSON object {"name": ..., "arguments": {...}} between <tool_call> and </tool_call>. The tools:\n<tools>' }}
    {%- for tool in tools %}
        {{- '\n' ~ (tool | tojson) }}
    {%- endfor %}
    {{- '\n</tools><|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role not in ['system', 'user', 'assistant', 'tool'] %}
        {{- raise_exception('Unsupported chat role: ' ~ message.role) }}
    {%- endif %}
    {%- if message.content is not string %}
        {{- raise_exception('Message content must be a string for role ' ~ message.role) }}
    {%- endif %}
    {%- if tools and loop.first and message.role == 'system' %}
    {%- elif message.role == 'assistant' %}
        {{- '<|im_start|>assistant\n' }}
        {%- generation %}
            {{- message.content }}
            {%- for tool_call in message.tool_calls or [] %}
                {%- set call = tool_call.function if tool_call.function is defined else tool_call %}
                {%- if message.content or not loop.first %}
                    {{- '\n' }}
                {%- endif %}
                {{- '<tool_call>\n{"name": ' ~ (call.name | tojson) ~ ', "arguments": ' }}
                {%- if call.arguments is string %}
                    {{- call.arguments }}
                {%- else %}
                    {{- call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
            {{- '<|im_end|>' }}
        {%- endgeneration %}
        {{- '\n' }}
    {%- else %}
        {{- '<|im_start|>' ~ message.role ~ '\n' ~ message.content ~ '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}"""

@dataclasses.dataclass
class CorpusStats:
    """What a corpus iterator read and skipped, so that no file is dropped silently."""

    files_read: int = 0
    bytes_read: int = 0
    # (path, reason) for every skipped file, in iteration order.
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    @property
    def files_skipped(self) -> int:
        return len(self.skipped)


def iter_stdlib_sources(
    root: str | os.PathLike | None = None,
    max_files: int | None = None,
    max_bytes: int | None = None,
    include_tests: bool = False,
    stats: CorpusStats | None = None,
) -> Iterator[str]:
    """Yield the text of each Python source file under ``root`` (default: the stdlib).

    Files that cannot be read or are not UTF-8 are skipped, recorded in ``stats`` (pass
    your own :class:`CorpusStats` to inspect them) and summarised in a warning once
    iteration finishes. ``max_files`` counts yielded files only, so skips do not shrink
    the corpus. ``max_bytes`` is a soft cap on UTF-8 bytes: iteration stops once it has
    been reached, so the last file may overshoot it; this keeps files whole.
    """
    if max_files is not None and max_files < 1:
        raise ValueError(f"max_files must be >= 1 or None, got {max_files}")
    if max_bytes is not None and max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1 or None, got {max_bytes}")
    stats = CorpusStats() if stats is None else stats
    root = stdlib_root() if root is None else Path(root)
    for path in list_source_files(root, include_tests=include_tests):
        if max_files is not None and stats.files_read >= max_files:
            break
        if max_bytes is not None and stats.bytes_read >= max_bytes:
            break
        text, reason = read_source(path)
        if text is None:
            stats.skipped.append((str(path), reason))
            continue
        stats.files_read += 1
        stats.bytes_read += len(text.encode("utf-8"))
        yield text
    if stats.skipped:
        logger.warning("Skipped %d of %d source files under %s: %s", stats.files_skipped,
                       stats.files_read + stats.files_skipped, root, stats.skipped)


def _check_train_args(vocab_size: int, min_frequency: int, model_max_length: int) -> None:
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size must be >= {MIN_VOCAB_SIZE} ({NUM_BYTE_TOKENS} byte tokens + "
            f"{len(SPECIAL_TOKENS)} special tokens), got {vocab_size}")
    if min_frequency < 1:
        raise ValueError(f"min_frequency must be >= 1, got {min_frequency}")
    if model_max_length < 1:
        raise ValueError(f"model_max_length must be >= 1, got {model_max_length}")


def _nonempty_texts(texts: Iterable[str]) -> Iterator[str]:
    """Fail fast on an empty corpus (before any training work) while still streaming generators."""
    if isinstance(texts, (str, bytes)):
        # Iterating a str would train on single characters: almost certainly a caller bug.
        raise TypeError("texts must be an iterable of strings, not a single str/bytes")
    it = (t for t in texts if t)
    first = next(it, None)
    if first is None:
        raise ValueError("texts is empty (no non-empty strings): cannot train a tokenizer on an empty corpus")
    return itertools.chain([first], it)


# Isolates the first line (through its "\n") of every span between special tokens. In a
# chat that line is the turn header ("assistant\n"), so the header's newline can never merge
# with leading whitespace of the content ("\n    return"). Without it such a merged token
# straddles the {% generation %} boundary: the assistant mask would cover the header's "\n",
# and training would see a header tokenization that add_generation_prompt never produces.
# `\A`, not `^`: Oniguruma's `^` matches at every line start. In plain documents this only
# stops the first line's newline from merging with the second line's indentation.
_FIRST_LINE = Regex(r"\A[^\n]*\n")


def build_bpe_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE pipeline that round-trips any string exactly.

    No normalizer (code is whitespace- and case-sensitive), GPT-2 style byte-level
    pre-tokenization without a prefix space (a prefix space would change the first token of
    every file), and no post-processor so offsets stay untrimmed; ``char_to_token``, which
    the chat assistant mask relies on, then maps every character to a token.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(_FIRST_LINE, behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def wrap_tokenizer(tok: Tokenizer, model_max_length: int = DEFAULT_MODEL_MAX_LENGTH) -> PreTrainedTokenizerFast:
    """Wrap a trained ``tokenizers.Tokenizer`` with the special-token roles and chat template."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token=ENDOFTEXT,
        # Pad == eos (as GPT-2/Qwen). Loss masks must therefore come from the attention or
        # assistant masks, never from `labels != pad_token_id`, or real eos would be masked.
        pad_token=ENDOFTEXT,
        # Deprecated name in transformers 5 (stored as `extra_special_tokens`), but accepted
        # there and the only one 4.x knows. Makes all seven count as special for decoding.
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        model_max_length=model_max_length,
        # transformers 4.x defaulted this to True, rewriting " ," to "," etc. on decode, which
        # breaks exact round-trips of code; 5.x defaults to False. Explicit for both.
        clean_up_tokenization_spaces=False,
        chat_template=CHAT_TEMPLATE,
    )


def train_code_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 8192,
    min_frequency: int = 2,
    show_progress: bool = False,
    model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
) -> PreTrainedTokenizerFast:
    """Train byte-level BPE on ``texts`` and return a ready-to-save HF fast tokenizer.

    ``vocab_size`` counts everything: special tokens, the 256 byte symbols and merges. A
    small corpus may yield fewer merges than requested; the vocabulary is then smaller.
    """
    _check_train_args(vocab_size, min_frequency, model_max_length)
    texts = _nonempty_texts(texts)
    tok = build_bpe_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        show_progress=show_progress,
        # Listed first so they take ids 0..6; the trainer also registers them as special
        # added tokens, which is what keeps "<|im_end|>" in user text from being split.
        special_tokens=list(SPECIAL_TOKENS),
        # Seeding all 256 byte symbols guarantees bytes unseen in the corpus still encode.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return wrap_tokenizer(tok, model_max_length=model_max_length)


def fim_format(prefix: str, middle: str, suffix: str, mode: str = "psm") -> str:
    """Lay out one fill-in-the-middle example (Bavarian et al., 2022) with our sentinels.

    * ``"psm"``: ``<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>{middle}``
    * ``"spm"``: ``<|fim_prefix|><|fim_suffix|>{suffix}<|fim_middle|>{prefix}{middle}``

    The SPM form is the paper's variant used by StarCoder: keeping ``<|fim_prefix|>`` first
    and letting the prefix run straight into the middle means the prefix/middle boundary
    needs no sentinel, so the model never sees a token split at an arbitrary cut point.
    No ``<|endoftext|>`` is appended; document packing adds it.
    """
    if mode == "psm":
        return f"{FIM_PREFIX}{prefix}{FIM_SUFFIX}{suffix}{FIM_MIDDLE}{middle}"
    if mode == "spm":
        return f"{FIM_PREFIX}{FIM_SUFFIX}{suffix}{FIM_MIDDLE}{prefix}{middle}"
    raise ValueError(f"mode must be 'psm' or 'spm', got {mode!r}")


def save_tokenizer(tok: PreTrainedTokenizerFast, out_dir: str | os.PathLike) -> Path:
    """Write ``tok`` as a standard HF tokenizer directory and return its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out_dir))
    return out_dir


def train_stdlib_tokenizer(
    out_dir: str | os.PathLike,
    vocab_size: int = 8192,
    min_frequency: int = 2,
    max_files: int | None = None,
    max_bytes: int | None = None,
    root: str | os.PathLike | None = None,
    include_tests: bool = False,
    show_progress: bool = False,
    model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
) -> tuple[PreTrainedTokenizerFast, CorpusStats]:
    """Train on local Python sources (default: this interpreter's stdlib) and save to ``out_dir``.

    Returns the tokenizer and the corpus statistics, so callers can report skipped files.
    """
    stats = CorpusStats()
    texts = iter_stdlib_sources(root, max_files=max_files, max_bytes=max_bytes,
                                include_tests=include_tests, stats=stats)
    tok = train_code_tokenizer(texts, vocab_size=vocab_size, min_frequency=min_frequency,
                               show_progress=show_progress, model_max_length=model_max_length)
    save_tokenizer(tok, out_dir)
    logger.info("Trained vocab of %d on %d files (%d bytes, %d skipped); saved to %s",
                len(tok), stats.files_read, stats.bytes_read, stats.files_skipped, out_dir)
    return tok, stats


def main(argv: list[str] | None = None) -> None:
    """``python -m codejax.tokenizer.train OUT_DIR [--vocab_size N ...]``."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("out_dir")
    p.add_argument("--vocab_size", type=int, default=8192)
    p.add_argument("--min_frequency", type=int, default=2)
    p.add_argument("--max_files", type=int, default=None)
    p.add_argument("--max_bytes", type=int, default=None)
    p.add_argument("--root", default=None, help="source tree to train on (default: the stdlib)")
    p.add_argument("--include_tests", action="store_true")
    p.add_argument("--model_max_length", type=int, default=DEFAULT_MODEL_MAX_LENGTH)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    _, stats = train_stdlib_tokenizer(**vars(args), show_progress=True)
    print(f"files read: {stats.files_read}, bytes: {stats.bytes_read}, skipped: {stats.files_skipped}")


if __name__ == "__main__":
    main()
