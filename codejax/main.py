"""Entry point: `python -m codejax.main --config configs/sft.py:tiny --workdir DIR [--config.x.y=v]`.

Flags -> config -> job registry -> run. Everything else lives in importable
functions, so a notebook calls `codejax.jobs.get_job(config.job)(config, workdir)`
and takes the same path as the command line.
"""
from __future__ import annotations

import json
import logging

from absl import app, flags
from ml_collections import config_flags

from codejax.jobs import get_job

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config: path/to/file.py[:variant]",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics, plots and the summary.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.getLogger().setLevel(logging.INFO)
    config = _CONFIG.value
    summary = get_job(config.job)(config, _WORKDIR.value)
    print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    app.run(main)
