"""The files of a workdir, written so that no crash can corrupt them and read so that a torn one never blocks a rerun.

Every file is written to a temporary name in the same folder, flushed to disk and renamed over
the old one (`write_text`, `write_json`): a kill, a power cut or a full disk leaves the old
file or the new one, never half of either. metrics.jsonl is the one file that grows by
appending; `read_jsonl` drops a torn last line (a kill mid-write, a full disk) with a warning
naming the file and line, and a rewrite of it (on resume) goes through `write_text` as well.

    WORKDIR/.codejax.lock     who is running in this workdir (codejax/train/guard.py)
    WORKDIR/config.json       the resolved config of the run that last started here
    WORKDIR/config.N.json     earlier versions, kept when a rerun changed the config
"""
from __future__ import annotations

import glob
import json
import logging
import os
import re
from typing import Any

log = logging.getLogger(__name__)


def write_text(path: str, text: str) -> str:
    """Replace `path` with `text` atomically (temp file in the same folder, fsync, rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp.{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def write_json(path: str, obj: Any) -> str:
    return write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def read_json(path: str) -> dict | None:
    """A workdir JSON file, or None when it is missing or torn (with a warning naming it)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        log.warning("%s is damaged (%s, line %d column %d); ignoring it", path, e.msg, e.lineno, e.colno)
        return None


def read_jsonl(path: str) -> list[dict]:
    """Rows of a JSONL workdir file. A torn line is dropped with a warning naming the file and line."""
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                log.warning("%s:%d: dropping a damaged line (%s; a kill or a full disk mid-write)", path, number,
                            e.msg)
    return rows


# ----------------------------------------------------------------------------- config.json and its history

def config_path(workdir: str) -> str:
    return os.path.join(workdir, "config.json")


def saved_config(workdir: str) -> dict | None:
    """The config.json of the run that last started in `workdir` (None when there is none)."""
    return read_json(config_path(workdir))


def _history_paths(workdir: str) -> list[tuple[int, str]]:
    found = []
    for path in glob.glob(os.path.join(glob.escape(workdir), "config.*.json")):
        match = re.fullmatch(r"config\.(\d+)\.json", os.path.basename(path))
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def write_config(config, workdir: str) -> str:
    """Write WORKDIR/config.json atomically. An earlier config.json that differs is kept as config.N.json
    (N = 1, 2, ...), so the history of a workdir's settings is never lost."""
    path = config_path(workdir)
    text = config.to_json_best_effort(indent=2) if hasattr(config, "to_json_best_effort") else json.dumps(
        config, indent=2, default=str)
    previous = read_json(path)
    if previous is not None and previous != json.loads(text):
        history = _history_paths(workdir)
        keep = os.path.join(workdir, f"config.{history[-1][0] + 1 if history else 1}.json")
        os.replace(path, keep)
        log.info("the config changed: the previous one is kept as %s", keep)
    return write_text(path, text)
