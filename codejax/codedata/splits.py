"""Held-out split by repository, package, directory or file.

A whole group goes to eval iff its `hash_score` (shared with `functions.split_by_file`) is below `eval_fraction`: deterministic per seed, and stable when other
groups are added. Files of one package share helpers and idioms, so splitting below the
package level would leak near-copies into eval; near-duplicates themselves are removed
before the split (each near-duplicate cluster keeps one file), so none can span both sides.

Groups (`split_by`):
  repo       the repository (one group per git repo, tree or dataset repo)
  package    repository + first path component: `email/mime/text.py` -> `email`, a
             top-level module `os.py` -> `os` (for the stdlib, one repo, this is the useful one)
  directory  repository + the file's directory
  file       repository + path
"""
from __future__ import annotations

import hashlib
import posixpath

SPLIT_BY = ("repo", "package", "directory", "file")


def hash_score(key: str, seed: int) -> float:
    """A uniform [0, 1) number per (seed, key); sha256 so it ignores PYTHONHASHSEED."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def split_key(repo: str, path: str, split_by: str) -> str:
    if split_by == "repo":
        return repo
    if split_by == "package":
        first = path.split("/", 1)[0]
        return f"{repo}/{first if '/' in path else posixpath.splitext(first)[0]}"
    if split_by == "directory":
        return f"{repo}/{posixpath.dirname(path)}"
    if split_by == "file":
        return f"{repo}/{path}"
    raise ValueError(f"data_pipeline.split_by={split_by!r}; expected one of {SPLIT_BY}")


def assign_split(repo: str, path: str, split_by: str, eval_fraction: float, seed: int) -> str:
    """'eval' or 'train' for a file."""
    return "eval" if hash_score(split_key(repo, path, split_by), seed) < eval_fraction else "train"
