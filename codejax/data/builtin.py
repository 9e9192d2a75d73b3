"""Built-in tokenizer and the cache it shares with the built-in rows, so every `:tiny` variant runs
with no other flags (big_vision's `runlocal`).

    tokenizer.path = "builtin"    model.hf_path's tokenizer when that is set; otherwise a byte-level
                                  BPE (2048 tokens, ChatML template) trained on this Python's stdlib
    data.train_paths = "builtin"  the job's built-in rows: codejax/builtin, which sits above
                                  codedata and rl (it mines stdlib functions and uses the arithmetic
                                  task), so the job registry resolves it and the data readers never see it

Both are built once and cached under $CODEJAX_CACHE (default ~/.cache/codejax), keyed by the
Python version (its stdlib is the corpus), and written to a temporary folder that is renamed
into place, so concurrent runs never see a half-built cache. Nothing is downloaded. The
results are deterministic: a cache deleted and rebuilt gives the same tokenizer and rows, so a
checkpoint trained on them stays usable.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from typing import Callable

log = logging.getLogger(__name__)

BUILTIN = "builtin"
TOKENIZER_VOCAB, TOKENIZER_FILES = 2048, 150
_VERSION = 6  # bump when what is built changes, so old caches are not reused


def cache_dir() -> str:
    root = os.environ.get("CODEJAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "codejax")
    return os.path.join(root, f"builtin-v{_VERSION}-py{sys.version_info.major}.{sys.version_info.minor}")


def cached(name: str, build: Callable[[str], None]) -> str:
    """The folder `name` in the cache, built by `build(tmp_dir)` on first use."""
    final = os.path.join(cache_dir(), name)
    if os.path.isdir(final):
        return final
    os.makedirs(cache_dir(), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.", dir=cache_dir())
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first: use its copy
            if not os.path.isdir(final):
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def builtin_tokenizer_dir() -> str:
    def build(out: str) -> None:
        from codejax.tokenizer import train_stdlib_tokenizer
        log.info("building the built-in tokenizer (%d tokens, stdlib sources); cached in %s", TOKENIZER_VOCAB,
                 cache_dir())
        train_stdlib_tokenizer(out, vocab_size=TOKENIZER_VOCAB, max_files=TOKENIZER_FILES)
    return cached(f"tokenizer-{TOKENIZER_VOCAB}", build)


def resolve_tokenizer_path(config) -> str:
    path = config.tokenizer.path or config.model.hf_path
    if path == BUILTIN:
        return config.model.hf_path or builtin_tokenizer_dir()
    return path

