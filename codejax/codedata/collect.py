"""Collection: source trees, git repositories and code datasets -> file references.

`sources` is a comma-separated list; each item is one of

* `stdlib`: the running interpreter's standard library (repo `python3.X-stdlib`; its
  LICENSE.txt classifies as PSF-2.0);
* a directory: every file with an extension of an allowed language, plus extensionless
  files (a shebang may make them code), sorted by path. A directory with `.git` is read
  through git: only tracked files (`git ls-files`), with the repository's commit count
  and each file's commit count in `meta`. Without git, or outside a work tree, the
  directory is walked instead and the fallback is counted;
* a `.jsonl` / `.json` / `.parquet` file (or a `datasets.save_to_disk` directory named
  with `dataset:`) of rows in The Stack's shape: `content`, `path`, `repo`, `license`,
  or the-stack-v1's `max_stars_repo_path` / `max_stars_repo_name` /
  `max_stars_repo_licenses` (a list, read as "all of these"); `lang` is used if present;
* a glob pattern, expanded in sorted order.

A reference (`FileRef`, a plain dict so it pickles cheaply to workers) names where the
content is; reading happens in the worker (`read_content`), which turns unreadable,
binary, non-UTF-8 and over-size files into counted skip reasons.
"""
from __future__ import annotations

import collections
import glob
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator

from codejax.codedata import licenses
from codejax.codedata.language import extensions_of
from codejax.corpus import pruned, stdlib_root, walk_source_files

log = logging.getLogger(__name__)

DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", ".parquet")

# Skip reasons of the read stage (counted as read/<reason>).
UNREADABLE, NOT_REGULAR, TOO_LARGE, BINARY, NOT_UTF8, BAD_ROW = (
    "unreadable", "not_a_regular_file", "too_large", "binary", "not_utf8", "bad_row")


def _walk(root: str, extensions: frozenset[str], include_tests: bool) -> list[str]:
    return walk_source_files(root, extensions, include_tests, extensionless=True)


def _git(root: str, *args: str) -> str:
    return subprocess.run(["git", "-C", root, "-c", "core.quotePath=false", *args], check=True,
                          capture_output=True, text=True, timeout=600).stdout


def _git_files(root: str, extensions: frozenset[str], include_tests: bool) -> list[str]:
    out = []
    for rel in _git(root, "ls-files", "-z").split("\0"):
        if not rel:
            continue
        parts = rel.split("/")
        if any(pruned(p, include_tests) for p in parts[:-1]):
            continue
        ext = os.path.splitext(parts[-1])[1].lower()
        if ext in extensions or (not ext and not parts[-1].startswith(".")):
            out.append(rel)
    return sorted(out)


def _git_commit_counts(root: str) -> tuple[int, dict[str, int]]:
    """(commits on HEAD, commits touching each path) from two git calls."""
    total = int(_git(root, "rev-list", "--count", "HEAD").strip())
    per_file = collections.Counter(line for line in _git(root, "log", "--format=", "--name-only").splitlines()
                                   if line)
    return total, dict(per_file)


def _tree_refs(root: str, source: str, repo: str, extensions, include_tests: bool,
               stats: collections.Counter) -> Iterator[dict]:
    license_id, license_file = licenses.repo_license(root)
    meta = {"license_file": license_file} if license_file else {}
    per_file: dict[str, int] = {}
    if os.path.isdir(os.path.join(root, ".git")) or os.path.isfile(os.path.join(root, ".git")):
        try:
            files = _git_files(root, extensions, include_tests)
            meta["commit_count"], per_file = _git_commit_counts(root)
        except (OSError, subprocess.SubprocessError, ValueError) as e:
            log.warning("%s: git failed (%s); walking the directory instead", root, e)
            stats["collect/git_fallback"] += 1
            files = _walk(root, extensions, include_tests)
    else:
        files = _walk(root, extensions, include_tests)
    for rel in files:
        file_meta = dict(meta)
        if rel in per_file:
            file_meta["file_commits"] = per_file[rel]
        yield {"abs": os.path.join(root, rel), "path": rel, "repo": repo, "source": source,
               "license": license_id, "meta": file_meta}


def _first(row: dict, *names):
    for name in names:
        if row.get(name) not in (None, ""):
            return row[name]
    return None


def _dataset_refs(path: str, source: str) -> Iterator[dict]:
    from codejax.data.sources import iter_file_rows  # reused: line-level errors, parquet batches

    base = os.path.splitext(os.path.basename(path.rstrip("/")))[0]
    for i, (where, row) in enumerate(iter_file_rows(path)):
        ref = {"where": where, "source": source}
        content = None if isinstance(row, Exception) else row.get("content")
        if not isinstance(content, str):
            problem = str(row) if isinstance(row, Exception) else "field 'content' missing or not a string"
            yield {**ref, "path": f"{base}/row{i}", "repo": base, "error": BAD_ROW, "problem": problem}
            continue
        lic = _first(row, "license", "licenses", "max_stars_repo_licenses")
        if isinstance(lic, (list, tuple)):
            lic = " AND ".join(map(str, lic)) if lic else None
        repo = _first(row, "repo", "repo_name", "max_stars_repo_name") or base
        meta = {k: row[k] for k in ("max_stars_count", "hexsha") if row.get(k) is not None}
        yield {**ref, "content": content, "path": str(_first(row, "path", "max_stars_repo_path") or f"row{i}"),
               "repo": str(repo), "license": str(lic) if lic else licenses.UNKNOWN,
               "language": str(row["lang"]).lower() if row.get("lang") else None, "meta": meta}


def _expand(spec: str) -> list[str]:
    items = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item != "stdlib" and set("*?[") & set(item):
            matches = sorted(glob.glob(item))
            if not matches:
                raise FileNotFoundError(f"data_pipeline.sources: pattern {item!r} matches no files")
            items.extend(matches)
        else:
            items.append(item)
    if not items:
        raise ValueError("data_pipeline.sources is empty; give 'stdlib', directories or dataset files")
    return items


def iter_refs(sources: str, languages, include_tests: bool, stats: collections.Counter) -> Iterator[dict]:
    """File references of every source in order (see the module docstring)."""
    extensions = extensions_of(languages)
    for item in _expand(sources):
        if item == "stdlib":
            repo = f"python{sys.version_info.major}.{sys.version_info.minor}-stdlib"
            yield from _tree_refs(str(stdlib_root()), "stdlib", repo, extensions, include_tests, stats)
        elif item.startswith("dataset:"):
            yield from _dataset_refs(item[len("dataset:"):], item)
        elif os.path.isdir(item):
            root = os.path.abspath(item)
            yield from _tree_refs(root, item, os.path.basename(root), extensions, include_tests, stats)
        elif item.lower().endswith(DATA_SUFFIXES) and os.path.isfile(item):
            yield from _dataset_refs(item, item)
        elif os.path.exists(item):
            raise ValueError(f"data_pipeline.sources: {item!r} is neither a directory nor a "
                             f"{'/'.join(DATA_SUFFIXES)} file")
        else:
            raise FileNotFoundError(f"data_pipeline.sources: {item!r} does not exist")


def read_content(ref: dict, max_bytes: int) -> tuple[str | None, str | None]:
    """(text, None) or (None, skip reason); never raises for a bad file."""
    if ref.get("error"):
        return None, ref["error"]
    if ref.get("content") is not None:
        text = ref["content"]
        if len(text) > max_bytes or len(text.encode("utf-8", "surrogatepass")) > max_bytes:
            return None, TOO_LARGE
        if "\0" in text:
            return None, BINARY
        return text, None
    try:
        st = os.stat(ref["abs"])  # follows symlinks: a dangling one is unreadable
        if not stat.S_ISREG(st.st_mode):  # directories named x.py, FIFOs (which would block)
            return None, NOT_REGULAR
        if st.st_size > max_bytes:
            return None, TOO_LARGE
        with open(ref["abs"], "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError:
        return None, UNREADABLE
    if len(data) > max_bytes:  # grew since the stat
        return None, TOO_LARGE
    if b"\0" in data:
        return None, BINARY
    try:
        return data.decode("utf-8").removeprefix("\ufeff"), None
    except UnicodeDecodeError:
        return None, NOT_UTF8
