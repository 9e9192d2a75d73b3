"""Code tokenizer: byte-level BPE training, ChatML chat template and FIM formatting.

Named ``codejax.tokenizer`` (singular) so it never shadows HF's ``tokenizers`` package.
The stdlib corpus is found and walked by codejax.corpus, like every other corpus.
"""

from codejax.tokenizer.train import (
    CHAT_TEMPLATE,
    ENDOFTEXT,
    FIM_MIDDLE,
    FIM_PAD,
    FIM_PREFIX,
    FIM_SUFFIX,
    IM_END,
    IM_START,
    MIN_VOCAB_SIZE,
    SPECIAL_TOKENS,
    CorpusStats,
    fim_format,
    iter_stdlib_sources,
    list_source_files,
    save_tokenizer,
    train_code_tokenizer,
    train_stdlib_tokenizer,
)

__all__ = [
    "CHAT_TEMPLATE",
    "ENDOFTEXT",
    "FIM_MIDDLE",
    "FIM_PAD",
    "FIM_PREFIX",
    "FIM_SUFFIX",
    "IM_END",
    "IM_START",
    "MIN_VOCAB_SIZE",
    "SPECIAL_TOKENS",
    "CorpusStats",
    "fim_format",
    "iter_stdlib_sources",
    "list_source_files",
    "save_tokenizer",
    "train_code_tokenizer",
    "train_stdlib_tokenizer",
]
