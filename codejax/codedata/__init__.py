"""Code corpus collection and task builders: turning source trees into training data.

Importing this package stays stdlib-only; helpers that walk directories import the
tokenizer's corpus walker on first use.
"""

from codejax.codedata.functions import (
    DEFAULT_MAX_BODY_LINES,
    MiningStats,
    default_root,
    iter_source_files,
    mine_functions,
    mine_source,
    mine_tree,
    split_by_file,
    write_jsonl,
)

__all__ = [
    "DEFAULT_MAX_BODY_LINES",
    "MiningStats",
    "default_root",
    "iter_source_files",
    "mine_functions",
    "mine_source",
    "mine_tree",
    "split_by_file",
    "write_jsonl",
]
