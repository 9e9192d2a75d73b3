"""Job registry: `config.job` names a function `run_<job>(config, workdir) -> summary`.

`get_job` returns it wrapped in the guard every job runs under (codejax/train/guard.py): the
workdir lock, the check of the new config against the workdir's config.json, and SIGINT /
SIGTERM handling from start-up to the final write. Once the lock is held, data.train_paths='builtin'
becomes the built-in rows' file for the jobs that read training data.

Jobs register themselves on import; `get_job` imports the job modules lazily so
`python -m codejax.main` only pays for the job it runs. A job module imports no other job
module (tests/test_import_graph.py): what jobs share lives below jobs/ (codejax.setup,
codejax.evaluation.sampling, codejax.train), and a job that runs others (quickstart)
looks them up here.
"""
from __future__ import annotations

import functools
import importlib
from typing import Any, Callable

JobFn = Callable[[Any, str], dict]
JOBS: dict[str, JobFn] = {}

# job name -> module that registers it
_JOB_MODULES = {
    "pretrain": "codejax.jobs.lm",
    "sft": "codejax.jobs.lm",
    "quickstart": "codejax.jobs.quickstart",
    "eval": "codejax.jobs.eval",
    "data": "codejax.jobs.data",
    "reward": "codejax.jobs.preference",
    "dpo": "codejax.jobs.preference",
    "grpo": "codejax.jobs.rl",
    "ppo": "codejax.jobs.rl",
    "synth": "codejax.jobs.synth",
    "constitutional": "codejax.jobs.constitutional",
}

# Jobs that read data.train_paths -> the built-in rows they get for 'builtin' (codejax/builtin):
# None = the rows for data.format.
_BUILTIN_ROWS = {"pretrain": None, "sft": None, "reward": "pairs", "dpo": "pairs"}


def register(name: str) -> Callable[[JobFn], JobFn]:
    def wrap(fn: JobFn) -> JobFn:
        JOBS[name] = fn
        return fn
    return wrap


def get_job(name: str) -> JobFn:
    if name not in JOBS and name in _JOB_MODULES:
        importlib.import_module(_JOB_MODULES[name])
    if name not in JOBS:
        raise ValueError(f"config.job={name!r} is not a registered job; known jobs: {sorted(_JOB_MODULES)}")
    from codejax.train.guard import run_guarded
    prepare = functools.partial(_with_builtin_rows, _BUILTIN_ROWS[name]) if name in _BUILTIN_ROWS else None
    return functools.wraps(JOBS[name])(functools.partial(run_guarded, JOBS[name], prepare=prepare))


def _with_builtin_rows(kind: str | None, config):
    from codejax.builtin import resolve_builtin_data
    return resolve_builtin_data(config, kind)
