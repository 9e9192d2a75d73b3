"""Where code corpora come from: the stdlib's location, the one source-tree walker, and reading files.

A package at the bottom of the import graph (it imports nothing of codejax), so the tokenizer
(which trains on the stdlib) and the code data pipeline (which writes the tokenizer's FIM
tokens) can both use it without depending on each other.
"""
from codejax.corpus.files import (PRUNED_DIRS, TEST_DIRS, list_source_files, pruned, read_source, stdlib_root,
                                  walk_source_files)

__all__ = ["PRUNED_DIRS", "TEST_DIRS", "list_source_files", "pruned", "read_source", "stdlib_root",
           "walk_source_files"]
