"""Human review: export the kept items for reviewers, read their verdicts back.

Each run writes WORKDIR/review.jsonl and review.csv, one item per row: `id`, `method`,
`verdict`, `instruction`, `solution`, `tests`, `note`. A reviewer fills in `verdict` (accept or
reject; yes/no, keep/drop, 1/0, true/false also read) in either file, and the next run with
`synth.review_path=that file` drops the rejected items (and, with synth.review_required, the
unreviewed ones). Verdicts are carried into the new export, so a review continues across runs.
A malformed row is an error naming the file, the line and the field.
"""
from __future__ import annotations

import csv
import json
import os

from codejax.evaluation.benchmarks import read_jsonl
from codejax.train.workdir import write_text

FIELDS = ("id", "method", "verdict", "instruction", "solution", "tests", "note")
_ACCEPT = frozenset({"accept", "accepted", "yes", "y", "keep", "1", "true", "ok", "good"})
_REJECT = frozenset({"reject", "rejected", "no", "n", "drop", "0", "false", "bad"})


def normalise_verdict(value, where: str) -> str:
    text = str(value if value is not None else "").strip().lower()
    if not text:
        return ""
    if text in _ACCEPT:
        return "accept"
    if text in _REJECT:
        return "reject"
    raise ValueError(f"{where}: field 'verdict' is {value!r}; write accept or reject (or leave it empty)")


def read_review(path: str) -> dict[str, dict]:
    """id -> {verdict, note} from a review file (.jsonl or .csv)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"synth.review_path={path!r} does not exist")
    if not path.endswith(".csv"):
        rows = list(read_jsonl(path))
    else:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "id" not in reader.fieldnames or "verdict" not in reader.fieldnames:
                raise ValueError(f"{path}:1: the header must have the fields 'id' and 'verdict' "
                                 f"(it has {reader.fieldnames})")
            rows = [(reader.line_num, row) for row in reader]
    out: dict[str, dict] = {}
    for n, row in rows:
        item_id = str(row.get("id") or "").strip()
        if not item_id:
            raise ValueError(f"{path}:{n}: field 'id' is missing or empty")
        out[item_id] = {"verdict": normalise_verdict(row.get("verdict"), f"{path}:{n}"),
                        "note": str(row.get("note") or "")}
    return out


def export_review(items, out_dir: str, previous: dict[str, dict] | None = None) -> list[str]:
    """review.jsonl and review.csv of `items`, with any verdicts and notes already given."""
    previous = previous or {}
    rows = [{"id": it.id, "method": it.method, "verdict": previous.get(it.id, {}).get("verdict", ""),
             "instruction": it.instruction, "solution": it.solution, "tests": it.tests,
             "note": previous.get(it.id, {}).get("note", "")} for it in items]
    jsonl = os.path.join(out_dir, "review.jsonl")
    write_text(jsonl, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    path = os.path.join(out_dir, "review.csv")
    with open(path + ".tmp", "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(path + ".tmp", path)
    return [jsonl, path]
