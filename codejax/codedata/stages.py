"""The per-file stages, run in worker processes: cleaning one file, building one file's rows.

`clean_file(ref)` runs FILE_STAGES in order on one file reference; each stage returns
None (go on) or a drop reason, counted as "<stage>/<reason>". A stage that raises drops
only its file, counted as "error/<stage>" and "errors/<stage>/<ExceptionType>" and logged
(the first MAX_LOGGED_ERRORS per process) with the file's path. `build_file_rows` runs
the task builders on one cleaned file with its own generator, `file_rng(seed, repo, path)`.
Workers are set up once by `init_worker` (the pool initializer, or called in-process when
workers == 1).
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import random
import time

from codejax.codedata import collect, decontam, dedup, licenses, pii, quality, secret_scan, security
from codejax.codedata.language import detect_language
from codejax.codedata.settings import Settings

log = logging.getLogger(__name__)

MAX_LOGGED_ERRORS = 10
PREFERENCE_FIELDS = ("chosen", "rejected")


def file_rng(seed: int, repo: str, path: str) -> random.Random:
    """A per-file generator: sha256, not hash(), so it is the same in every process and run."""
    digest = hashlib.sha256(f"{seed}\0{repo}\0{path}".encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


@dataclasses.dataclass
class FileState:
    """One file on its way through the per-file stages."""

    ref: dict
    text: str | None = None
    language: str = "unknown"
    license: str = licenses.UNKNOWN
    tree: object = None
    meta: dict = dataclasses.field(default_factory=dict)
    events: collections.Counter = dataclasses.field(default_factory=collections.Counter)


def stage_read(f: FileState, s: Settings) -> str | None:
    f.text, reason = collect.read_content(f.ref, s.max_file_bytes)
    return reason


def stage_language(f: FileState, s: Settings) -> str | None:
    f.language = f.ref.get("language") or detect_language(f.ref["path"], f.text)
    return None if f.language in s.language_list else f.language


def stage_license(f: FileState, s: Settings) -> str | None:
    f.license = licenses.file_license(f.text, f.ref.get("license", licenses.UNKNOWN))
    if f.license == licenses.UNKNOWN:
        return None if s.keep_unknown_license else licenses.UNKNOWN
    return None if licenses.is_allowed(f.license, s.license_set) else f.license


def stage_quality(f: FileState, s: Settings) -> str | None:
    f.tree = quality.parse_python(f.text) if f.language == "python" else None
    f.meta["quality"] = scores = quality.quality_scores(f.text, f.tree, f.language)
    return quality.drop_reason(scores, s.quality_thresholds)


def stage_decontam(f: FileState, s: Settings) -> str | None:
    grams = _worker.get("eval_grams")
    return "eval_overlap" if grams and decontam.contaminated(f.text, grams, s.decontam_ngram) else None


def stage_security(f: FileState, s: Settings) -> str | None:
    if f.language != "python" or f.tree is None or not s.severity:
        return None
    findings = security.bandit_findings(f.text, f.ref["path"], tree=f.tree)
    f.tree = None  # bandit has annotated its nodes
    ids = collections.Counter(test_id for test_id, _, _ in findings)
    f.events.update({f"bandit/{k}": v for k, v in ids.items()})
    if ids:
        f.meta["bandit"] = dict(sorted(ids.items()))
    return security.blocking_finding(findings, s.severity)


def stage_pii(f: FileState, s: Settings) -> str | None:
    if s.pii:
        f.text, found = pii.redact_pii(f.text, f.language)
        f.events.update({f"pii/{k}": v for k, v in found.items()})
        if found:
            f.events["pii/files"] += 1
    return None


def stage_secrets(f: FileState, s: Settings) -> str | None:
    if s.secrets:
        f.text, found = secret_scan.redact_secrets(f.text, f.ref["path"])
        f.events.update({f"secrets/{k}": v for k, v in found.items()})
        if found:
            f.events["secrets/files"] += 1
    return None


# Order matters: cheap filters first, text-changing stages after the last filter.
FILE_STAGES = (("read", stage_read), ("language", stage_language), ("license", stage_license),
               ("quality", stage_quality), ("decontam", stage_decontam), ("security", stage_security),
               ("pii", stage_pii), ("secrets", stage_secrets))

_worker: dict = {}


def init_worker(s: Settings, eval_grams: frozenset | None) -> None:
    """Per-process set-up (pool initializer; also called in-process when workers == 1)."""
    _worker.clear()  # in-process runs: nothing cached from an earlier run's settings
    _worker.update(settings=s, eval_grams=eval_grams, errors_logged=0)
    if s.secrets:
        secret_scan.configure(s.secret_plugins)


def _log_error(where: str, stage: str, e: BaseException) -> None:
    _worker["errors_logged"] = _worker.get("errors_logged", 0) + 1
    if _worker["errors_logged"] <= MAX_LOGGED_ERRORS:
        log.warning("%s: stage %s raised %s: %s (file skipped)", where, stage, type(e).__name__, e)


def clean_file(ref: dict) -> dict:
    """Run the per-file stages on one reference. Returns {"drop": reason or None, "record",
    "events", "seconds", "exact", "signature", "scores"}; never raises for a bad file."""
    s: Settings = _worker["settings"]
    f = FileState(ref=ref, meta=dict(ref.get("meta") or {}))
    seconds: dict[str, float] = {}
    result = {"drop": None, "record": None, "events": f.events, "seconds": seconds, "bytes": 0}
    for name, stage in FILE_STAGES:
        start = time.process_time()  # CPU, not wall: a busy machine does not inflate it
        try:
            reason = stage(f, s)
            drop = None if reason is None else f"{name}/{reason}"
        except Exception as e:  # noqa: BLE001 - one bad file must never end the run
            _log_error(ref.get("where") or f"{ref.get('repo')}/{ref.get('path')}", name, e)
            f.events[f"errors/{name}/{type(e).__name__}"] += 1
            drop = f"error/{name}"
        seconds[name] = time.process_time() - start
        if name == "read" and f.text is not None:
            result["bytes"] = len(f.text.encode("utf-8", "surrogatepass"))
        if drop:
            result.update(drop=drop, scores=f.meta.get("quality"))
            return result
    start = time.process_time()
    result["exact"] = dedup.exact_hash(f.text)
    result["signature"] = dedup.signature(f.text, s.num_perm, s.shingle_size) if s.near_dedup_threshold else None
    seconds["signature"] = time.process_time() - start
    result["scores"] = f.meta["quality"]
    result["record"] = {"content": f.text, "path": ref["path"], "repo": ref["repo"], "license": f.license,
                        "language": f.language, "source": ref["source"],
                        "size": len(f.text.encode("utf-8", "surrogatepass")), "meta": f.meta}
    return result


def text_row(record: dict) -> dict:
    """A cleaned file as a pretraining row (`data.format=text`)."""
    q = record["meta"].get("quality", {})
    return {"text": record["content"], "task": "text", "repo": record["repo"], "path": record["path"],
            "license": record["license"], "language": record["language"],
            "difficulty": float(q.get("complexity", q.get("lines", 0)))}


def task_rows(record: dict, rng: random.Random) -> tuple[list[dict], collections.Counter]:
    """The task builders on one cleaned file (the one call into codejax.codedata.tasks)."""
    s: Settings = _worker["settings"]
    if not s.task_list:
        return [text_row(record)], collections.Counter()
    if "task_options" not in _worker:
        _worker["task_options"] = s.task_options()
    from codejax.codedata import tasks
    return tasks.build_tasks(record, s.task_list, rng, _worker["task_options"])


def build_file_rows(item: tuple[dict, str]) -> dict:
    """Task rows of one cleaned file, decontaminated. Never raises for a bad file."""
    record, split = item
    s: Settings = _worker["settings"]
    events: collections.Counter = collections.Counter()
    start = time.process_time()
    try:
        rows, skipped = task_rows(record, file_rng(s.seed, record["repo"], record["path"]))
    except Exception as e:  # noqa: BLE001
        _log_error(f"{record['repo']}/{record['path']}", "tasks", e)
        events[f"errors/tasks/{type(e).__name__}"] += 1
        rows, skipped = [], collections.Counter()
    kept, dropped = [], collections.Counter()
    grams = _worker.get("eval_grams")
    for row in rows:
        if grams and s.task_list and decontam.contaminated(decontam.row_text(row), grams, s.decontam_ngram):
            dropped[row.get("task", "?")] += 1
        else:
            kept.append(row)
    return {"rows": kept, "split": split, "skipped": skipped, "decontaminated": dropped, "events": events,
            "seconds": time.process_time() - start}


def is_preference(row: dict) -> bool:
    return all(k in row for k in PREFERENCE_FIELDS)
