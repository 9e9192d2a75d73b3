"""The `data_pipeline` config section, declared once: `Settings` (what the workers get).

codejax/config.py generates the section from the fields below (name, default, and the
comment beside each is its documentation), `settings_from_config` reads it back, and
every field is checked before any work starts, with errors that name the field
(`data_pipeline.mix_strategy='random': expected one of (...)`). The stages read typed
views (`language_list`, `license_set`, `quality_thresholds`, `task_list`, `task_options`)
built from the fields. Importing this module imports nothing heavy (config.py does).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

HIGH = "HIGH"


@dataclasses.dataclass(frozen=True)
class Settings:
    # ---- collection
    # comma-separated: 'stdlib' | directories (with .git: tracked files, commit counts) |
    # .jsonl/.json/.parquet rows in The Stack's shape (content, path, repo, license) | globs
    sources: str = "stdlib"
    include_tests: bool = True  # also test/ and tests/ dirs (the stdlib's test suite is ~60% of its files)
    max_files: int = 0  # files considered, in source order; 0 = all
    max_file_bytes: int = 1_000_000  # bigger files are skipped and counted (read/too_large)
    workers: int = 0  # processes for the per-file stages; 0 = CPU count, 1 = in this process
    chunksize: int = 8  # files per task sent to a worker
    languages: str = "python"  # comma-separated allow-list (extension or shebang)
    # ---- licenses: SPDX ids (headers or LICENSE/COPYING files); GPL/LGPL/AGPL/MPL are left out by default
    license_allow: str = "MIT,Apache-2.0,BSD-2-Clause,BSD-3-Clause,ISC,0BSD,Unlicense,CC0-1.0,PSF-2.0,Zlib"
    keep_unknown_license: bool = False  # no license found means all rights reserved: dropped and counted
    # ---- quality filters (codejax/codedata/quality.py)
    require_parse: bool = True  # Python files must parse (ast.parse)
    min_chars: int = 20  # empty __init__.py files and the like carry nothing to learn
    max_line_length: int = 1000
    max_mean_line_length: float = 100.0
    min_alnum_fraction: float = 0.25
    max_complexity: int = 0  # most complex function's cyclomatic complexity; 0 = no limit
    drop_generated: bool = True
    # ---- cleaning
    pii: bool = True  # emails, public IPs and author names in comments/strings -> <EMAIL>/<IP_ADDRESS>/<NAME>
    secrets: bool = True
    secret_plugins: str = ""  # detect-secrets plugin class names; '' = all of them
    security_severity: str = HIGH  # drop files with a bandit finding at or above: LOW | MEDIUM | HIGH | none
    decontaminate: bool = True
    decontam_sets: str = "humaneval"  # humaneval | name:path
    decontam_ngram: int = 10
    # ---- dedup
    exact_dedup: bool = True
    near_dedup_threshold: float = 0.85  # MinHash LSH Jaccard threshold; 0 = off
    num_perm: int = 128
    shingle_size: int = 5
    # ---- task rows (codejax/codedata/tasks)
    tasks: str = ""  # comma-separated codejax.codedata.tasks.TASK_NAMES; '' = each cleaned file as one {text} row
    augmentations: str = ""  # comma-separated codejax.codedata.augment.AUGMENTATIONS for `refactor`; '' = all
    bug_kinds: str = ""  # comma-separated codejax.codedata.augment.BUGS for bug_detection/repair; '' = all
    fim_mode: str = "psm"  # psm | spm | both (drawn per row)
    fim_rate: float = 0.5  # share of functions that get a FIM row
    max_functions_per_file: int = 8
    max_body_lines: int = 60  # longer functions are not made into task rows
    check_with_sandbox: bool = False  # execute checks and derived tests in codejax.sandbox
    sandbox_timeout_s: float = 5.0  # per sandboxed check
    row_format: str = "alpaca"  # task rows: alpaca {instruction,input,output} | chat {messages}
    system_prompt: str = ""  # chat rows: a system turn; '' = none
    # ---- split, mixing, curriculum
    eval_fraction: float = 0.05
    split_by: str = "package"  # repo | package | directory | file
    mix_strategy: str = "proportional"  # equal | proportional | temperature | weights
    mix_temperature: float = 2.0
    mix_weights: str = ""  # mix_strategy=weights: "task=w,..."
    mix_total: int = 0  # training rows after mixing; 0 = as many as were built
    curriculum: str = "none"  # none | length | complexity
    curriculum_schedule: str = "sorted"  # sorted | buckets:K
    # ---- output
    output_format: str = "jsonl"  # jsonl | parquet
    shard_rows: int = 20000
    plots: bool = True
    progress_bar: bool = True
    seed: int = dataclasses.field(default=0, metadata={"config": False})  # the config's top-level seed

    # ------------------------------------------------------------------ typed views

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1

    @property
    def language_list(self) -> tuple[str, ...]:
        return csv(self.languages)

    @functools.cached_property
    def license_set(self) -> frozenset:
        from codejax.codedata import licenses
        return licenses.parse_allow_list(self.license_allow)

    @property
    def quality_thresholds(self):
        from codejax.codedata import quality
        return quality.QualityThresholds(**{f.name: getattr(self, f.name)
                                            for f in dataclasses.fields(quality.QualityThresholds)})

    @property
    def severity(self) -> str:
        """The bandit severity cut, normalised ('' = no security filter)."""
        from codejax.codedata import security
        return security.check_severity(self.security_severity)

    @property
    def task_list(self) -> tuple[str, ...]:
        return csv(self.tasks)

    @property
    def weight_map(self) -> dict[str, float]:
        from codejax.codedata import mixing
        return mixing.parse_weights(self.mix_weights)

    def task_options(self):
        """The task builders' options (codejax.codedata.tasks.TaskOptions) from the task fields."""
        from codejax.codedata import tasks
        names = {f.name for f in dataclasses.fields(tasks.TaskOptions)}
        values: dict[str, Any] = {name: getattr(self, name) for name in names}
        for name in ("augmentations", "bug_kinds"):  # '' = the builders' default (all of them)
            if csv(values[name]):
                values[name] = csv(values[name])
            else:
                del values[name]
        try:
            return tasks.TaskOptions(**values)
        except (TypeError, ValueError) as e:
            raise ValueError(f"data_pipeline task options: {e}") from e


def csv(value: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in str(value).split(",") if s.strip())


def config_fields() -> dict[str, Any]:
    """The `config.data_pipeline` fields and their defaults."""
    return {f.name: f.default for f in dataclasses.fields(Settings) if f.metadata.get("config", True)}


def settings_from_config(config) -> Settings:
    """Settings from a full config (its `data_pipeline` section and `seed`), with every
    field checked; errors name the field."""
    d = config.data_pipeline
    s = Settings(**{name: d[name] for name in config_fields()}, seed=int(config.seed))
    check(s)
    return s


def check(s: Settings) -> None:
    """Fail before any work on a setting that would fail later (or silently do nothing)."""
    from codejax.codedata import mixing, output, splits

    def need(ok: bool, field: str, what: str):
        if not ok:
            raise ValueError(f"data_pipeline.{field}={getattr(s, field, None)!r}: {what}")

    need(s.max_files >= 0, "max_files", "must be >= 0 (0 = all)")
    need(s.max_file_bytes > 0, "max_file_bytes", "must be > 0")
    need(s.workers >= 0, "workers", "must be >= 0 (0 = CPU count)")
    need(s.chunksize >= 1, "chunksize", "must be >= 1")
    need(bool(s.language_list), "languages", "name at least one language")
    s.license_set  # noqa: B018 - parsed now, so a bad id fails here
    s.severity  # noqa: B018
    need(0.0 <= s.near_dedup_threshold <= 1.0, "near_dedup_threshold", "must be in [0, 1] (0 = off)")
    need(s.num_perm >= 2, "num_perm", "must be >= 2")
    if s.near_dedup_threshold:
        from datasketch import MinHashLSH
        try:  # LSH needs at least 2 bands: thresholds near 1 need more permutations
            MinHashLSH(threshold=s.near_dedup_threshold, num_perm=s.num_perm)
        except ValueError as e:
            need(False, "near_dedup_threshold", f"MinHashLSH cannot index it with num_perm={s.num_perm}: {e}")
    need(s.shingle_size >= 1, "shingle_size", "must be >= 1")
    need(s.decontam_ngram >= 1, "decontam_ngram", "must be >= 1")
    need(0.0 <= s.eval_fraction <= 1.0, "eval_fraction", "must be in [0, 1]")
    need(s.split_by in splits.SPLIT_BY, "split_by", f"expected one of {splits.SPLIT_BY}")
    need(s.mix_strategy in mixing.STRATEGIES, "mix_strategy", f"expected one of {mixing.STRATEGIES}")
    need(s.mix_temperature > 0, "mix_temperature", "must be > 0")
    need(s.mix_strategy != "weights" or bool(s.weight_map), "mix_weights", "mix_strategy='weights' needs task=w,...")
    need(s.mix_total >= 0, "mix_total", "must be >= 0 (0 = natural size)")
    need(s.curriculum in mixing.CURRICULA, "curriculum", f"expected one of {mixing.CURRICULA}")
    mixing.parse_schedule(s.curriculum_schedule)
    need(s.output_format in output.FORMATS, "output_format", f"expected one of {output.FORMATS}")
    need(s.shard_rows >= 1, "shard_rows", "must be >= 1")
    if s.task_list:
        from codejax.codedata import tasks
        unknown = sorted(set(s.task_list) - set(tasks.TASK_NAMES))
        need(not unknown, "tasks", f"unknown tasks {unknown}; known: {list(tasks.TASK_NAMES)}")
        s.task_options()  # bad option values fail here, before any work
