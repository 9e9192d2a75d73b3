"""Job `data`: the code data pipeline (codejax/codedata) from a config to shards and a report.

    python -m codejax.main --config configs/data_pipeline.py --workdir runs/data
    python -m codejax.main --config configs/data_pipeline.py --workdir runs/data \
        --config.data_pipeline.sources=/src/repo_a,/src/repo_b,/data/the_stack_python.parquet

Writes to the workdir: `train-0000i-of-0000N.jsonl` (mixed and ordered), `eval-*.jsonl`
(held out by repository or package), `preference-{train,eval}-*.jsonl` when the
preference task is built, `report.json`, `report.md`, `plots/*.png`, `summary.json` and
`config.json`: built in WORKDIR/.staging and swapped in as one set (codejax/codedata/output.py),
config.json last, so a killed run leaves the previous outputs whole.
An SFT run reads the shards directly:
`--config.data.train_paths='runs/data/train-*.jsonl' --config.data.eval_paths='runs/data/eval-*.jsonl'`
with `data.format=alpaca` (or `chat` with data_pipeline.row_format=chat; `text` when
data_pipeline.tasks is empty).
"""
from __future__ import annotations

import logging
import os

from codejax.codedata.output import finish_swap, staging_dir, swap_in
from codejax.codedata.pipeline import run_pipeline, settings_from_config
from codejax.jobs import register
from codejax.train.workdir import write_config, write_json

log = logging.getLogger(__name__)


@register("data")
def run_data(config, workdir: str) -> dict:
    settings = settings_from_config(config)  # every field checked before any work
    os.makedirs(workdir, exist_ok=True)
    finish_swap(workdir)  # a run killed mid-swap: its complete set goes in first
    staging = staging_dir(workdir)
    summary = {**run_pipeline(settings, staging), "out_dir": workdir}
    write_json(os.path.join(staging, "summary.json"), summary)
    write_config(config, staging)
    swap_in(workdir)
    log.info("data: %d of %d files kept; rows %s; report in %s", summary["files_kept"], summary["files_listed"],
             summary["rows"], os.path.join(workdir, "report.md"))
    return summary
