"""The files of a workdir that every job writes the same way."""
from __future__ import annotations

import os


def write_config(config, workdir: str) -> str:
    """Write WORKDIR/config.json (the resolved config) atomically: a crash leaves the old file or the new one."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "config.json")
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(config.to_json_best_effort(indent=2))
    os.replace(tmp, path)
    return path
