"""The `data_pipeline` config section as a checked, frozen `Settings` (what the workers get).

Every field is checked before any work starts, and errors name the field
(`data_pipeline.mix_strategy='random': expected one of (...)`).
"""
from __future__ import annotations

import ast
import dataclasses
import os

from codejax.datapipe import licenses, mixing, output, quality, security, splits

# Config fields passed on to tasks.TaskOptions (row_format becomes its output_format).
TASK_OPTION_FIELDS = ("augmentations", "fim_mode", "fim_rate", "max_functions_per_file", "check_with_sandbox",
                      "row_format")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The `data_pipeline` config section, checked; codejax/config.py has each field's default
    and meaning (no defaults here: one place holds them)."""

    sources: str
    include_tests: bool
    max_files: int
    max_file_bytes: int
    workers: int
    chunksize: int
    seed: int
    languages: tuple[str, ...]
    license_allow: frozenset
    keep_unknown_license: bool
    quality: quality.QualityThresholds
    pii: bool
    secrets: bool
    secret_plugins: str
    security_severity: str
    decontaminate: bool
    decontam_sets: str
    decontam_ngram: int
    exact_dedup: bool
    near_dedup_threshold: float
    num_perm: int
    shingle_size: int
    tasks: tuple[str, ...]
    task_options: tuple  # (name, value) pairs for tasks.TaskOptions
    eval_fraction: float
    split_by: str
    mix_strategy: str
    mix_temperature: float
    mix_weights: tuple
    mix_total: int
    curriculum: str
    curriculum_schedule: str
    output_format: str
    shard_rows: int
    plots: bool
    progress_bar: bool

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1


def _csv(value: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in str(value).split(",") if s.strip())


def _option_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word: a string


def settings_from_config(config) -> Settings:
    """Settings from a full config (its `data_pipeline` section and `seed`), with every
    field checked; errors name the field."""
    d = config.data_pipeline
    task_options = {name: d[name] for name in TASK_OPTION_FIELDS}
    task_options["output_format"] = task_options.pop("row_format")
    for item in (i.strip() for i in d.task_options.split(";")):  # ';': values may hold commas
        if not item:
            continue
        name, eq, value = item.partition("=")
        if not eq or not name.strip().isidentifier():
            raise ValueError(f"data_pipeline.task_options: entry {item!r} is not name=value")
        task_options[name.strip()] = _option_value(value.strip())
    s = Settings(
        sources=d.sources, include_tests=d.include_tests, max_files=d.max_files, max_file_bytes=d.max_file_bytes,
        workers=d.workers, chunksize=d.chunksize, seed=int(config.seed), languages=_csv(d.languages),
        license_allow=licenses.parse_allow_list(d.license_allow), keep_unknown_license=d.keep_unknown_license,
        quality=quality.QualityThresholds(
            require_parse=d.require_parse, min_chars=d.min_chars, max_line_length=d.max_line_length,
            max_mean_line_length=d.max_mean_line_length, min_alnum_fraction=d.min_alnum_fraction,
            max_complexity=d.max_complexity, drop_generated=d.drop_generated),
        pii=d.pii, secrets=d.secrets, secret_plugins=d.secret_plugins,
        security_severity=security.check_severity(d.security_severity),
        decontaminate=d.decontaminate, decontam_sets=d.decontam_sets, decontam_ngram=d.decontam_ngram,
        exact_dedup=d.exact_dedup, near_dedup_threshold=d.near_dedup_threshold, num_perm=d.num_perm,
        shingle_size=d.shingle_size, tasks=_csv(d.tasks), task_options=tuple(sorted(task_options.items())),
        eval_fraction=d.eval_fraction, split_by=d.split_by, mix_strategy=d.mix_strategy,
        mix_temperature=d.mix_temperature, mix_weights=tuple(sorted(mixing.parse_weights(d.mix_weights).items())),
        mix_total=d.mix_total, curriculum=d.curriculum, curriculum_schedule=d.curriculum_schedule,
        output_format=d.output_format, shard_rows=d.shard_rows, plots=d.plots, progress_bar=d.progress_bar)
    check(s)
    return s


def check(s: Settings) -> None:
    """Fail before any work on a setting that would fail later (or silently do nothing)."""
    def need(ok: bool, field: str, what: str):
        if not ok:
            raise ValueError(f"data_pipeline.{field}={getattr(s, field, None)!r}: {what}")

    need(s.max_files >= 0, "max_files", "must be >= 0 (0 = all)")
    need(s.max_file_bytes > 0, "max_file_bytes", "must be > 0")
    need(s.workers >= 0, "workers", "must be >= 0 (0 = CPU count)")
    need(s.chunksize >= 1, "chunksize", "must be >= 1")
    need(bool(s.languages), "languages", "name at least one language")
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
    need(s.mix_strategy != "weights" or bool(s.mix_weights), "mix_weights", "mix_strategy='weights' needs task=w,...")
    need(s.mix_total >= 0, "mix_total", "must be >= 0 (0 = natural size)")
    need(s.curriculum in mixing.CURRICULA, "curriculum", f"expected one of {mixing.CURRICULA}")
    mixing.parse_schedule(s.curriculum_schedule)
    need(s.output_format in output.FORMATS, "output_format", f"expected one of {output.FORMATS}")
    need(s.shard_rows >= 1, "shard_rows", "must be >= 1")
    if s.tasks:
        from codejax.datapipe import tasks
        unknown = sorted(set(s.tasks) - set(tasks.TASK_NAMES))
        need(not unknown, "tasks", f"unknown tasks {unknown}; known: {list(tasks.TASK_NAMES)}")
        make_task_options(s)  # unknown option names fail here, before any work


def make_task_options(s: Settings):
    """tasks.TaskOptions from the settings; options it does not have are an error naming them,
    except the pipeline's own defaults (fim_mode, ...), which are passed only if it has them."""
    from codejax.datapipe import tasks

    known = {f.name for f in dataclasses.fields(tasks.TaskOptions)}
    ours = {*TASK_OPTION_FIELDS, "output_format"} - {"row_format"}
    options = dict(s.task_options)
    unknown = sorted(set(options) - known - ours)
    if unknown:
        raise ValueError(f"data_pipeline.task_options: TaskOptions has no fields {unknown}; known: {sorted(known)}")
    kwargs = {k: v for k, v in options.items() if k in known}
    if isinstance(kwargs.get("augmentations"), str):  # '' = the builders' default (all of them)
        kwargs["augmentations"] = _csv(kwargs["augmentations"]) or dataclasses.MISSING
    kwargs = {k: v for k, v in kwargs.items() if v is not dataclasses.MISSING}
    try:
        return tasks.TaskOptions(**kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"data_pipeline task options {kwargs}: {e}") from e
