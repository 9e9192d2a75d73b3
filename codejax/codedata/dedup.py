"""Exact and near-duplicate detection.

Exact: sha256 of the text with every whitespace run collapsed to one space, so
re-indented or re-wrapped copies count as the same file.

Near: MinHash signatures (datasketch, `num_perm` permutations) of the set of token
`shingle_size`-grams (tokens: identifiers, numbers and single punctuation characters,
so formatting does not matter), indexed with MinHashLSH at the Jaccard `threshold`.
Every LSH candidate pair is checked on the signatures' estimated Jaccard (LSH alone lets
through pairs somewhat below the threshold), pairs at or above it are joined into
clusters (connected components, as in BigCode's near-dedup), and each cluster keeps only
its first member by (repo, path). Signatures are computed in the workers; the LSH index
and the clustering run in the parent over keys in sorted order, so the result does not
depend on the number of workers.
"""
from __future__ import annotations

import hashlib
import re

import numpy as np

_TOKEN = re.compile(r"\w+|[^\w\s]")
_permutations: dict[int, object] = {}


def _scheme() -> dict:
    """datasketch 2 names its hashing scheme, and wants it named when rebuilding from hash
    values; datasketch 1.x has a single scheme and no such argument."""
    import inspect

    from datasketch import MinHash
    return {"scheme": "affine32"} if "scheme" in inspect.signature(MinHash.__init__).parameters else {}


def exact_hash(text: str) -> str:
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()


def shingles(text: str, size: int) -> set[bytes]:
    """The set of `size`-token windows; a text shorter than that is one shingle."""
    tokens = _TOKEN.findall(text)
    if len(tokens) <= size:
        return {" ".join(tokens).encode("utf-8")}
    return {" ".join(tokens[i:i + size]).encode("utf-8") for i in range(len(tokens) - size + 1)}


def _minhash(num_perm: int, hashvalues=None):
    from datasketch import MinHash

    if num_perm not in _permutations:  # generating them costs more than hashing a small file
        _permutations[num_perm] = (MinHash(num_perm=num_perm, **_scheme()).permutations, _scheme())
    permutations, scheme = _permutations[num_perm]
    return MinHash(num_perm=num_perm, permutations=permutations, hashvalues=hashvalues, **scheme)


def signature(text: str, num_perm: int, shingle_size: int) -> np.ndarray:
    """The MinHash signature (num_perm hash values) of a text's shingle set."""
    m = _minhash(num_perm)
    m.update_batch(shingles(text, shingle_size))
    return np.asarray(m.hashvalues)


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


def near_duplicate_clusters(keys: list, signatures: list[np.ndarray], threshold: float,
                            num_perm: int) -> list[list[int]]:
    """Clusters (lists of indices into `keys`, each sorted by key) of two or more items whose
    signatures link them at Jaccard >= threshold; singletons are left out."""
    from datasketch import MinHashLSH

    order = sorted(range(len(keys)), key=lambda i: keys[i])
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    parent = list(range(len(keys)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in order:
        m = _minhash(num_perm, signatures[i])
        for j in lsh.query(m):  # only items inserted before i: each pair is checked once
            if estimated_jaccard(signatures[i], signatures[j]) >= threshold:
                ri, rj = root(i), root(j)
                if ri != rj:
                    parent[max(ri, rj, key=lambda r: keys[r])] = min(ri, rj, key=lambda r: keys[r])
        lsh.insert(i, m)
    clusters: dict[int, list[int]] = {}
    for i in order:
        clusters.setdefault(root(i), []).append(i)
    return [members for members in clusters.values() if len(members) > 1]
