"""What a rerun in an existing workdir may change: the saved config.json against the new config.

Each field that differs falls in one of three classes, looked up in `CHANGE_CLASSES`
(first matching pattern wins; patterns are fnmatch patterns over dotted names):

    resumable   the run continues as if nothing happened: more steps, logging and eval
                intervals, checkpoint retention, the sharding of the same arrays, ...
    allowed     changes how training goes on, not what is trained: the learning rate and
                schedule, RL sampling settings, ... The rerun is refused unless
                `--config.train.allow_config_change=True`; then each change is logged and
                the earlier config.json is kept as config.N.json.
    incompatible  the checkpoints or the data iterator belong to a different run: the
                model, tokenizer, PEFT method or rank, job, data, seq_len, seed, ...
                Always refused, with a diff of the fields; use a new workdir.

Fields that the saved config does not have (it was written by an older codejax) are not
changes. A job that has no resume (eval, data) uses its own table in `JOB_CLASSES`: for it
every setting that shapes its output is incompatible.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
from typing import Any, Iterable

RESUMABLE, ALLOWED, INCOMPATIBLE = "resumable", "allowed", "incompatible"

# Training jobs (pretrain, sft, reward, dpo, grpo, ppo; quickstart's stages).
CHANGE_CLASSES: tuple[tuple[str, str], ...] = (
    ("train.steps", RESUMABLE), ("train.log_every", RESUMABLE), ("train.eval_every", RESUMABLE),
    ("train.eval_batches", RESUMABLE), ("train.checkpoint_every", RESUMABLE), ("train.keep_checkpoints", RESUMABLE),
    ("train.keep_best", RESUMABLE), ("train.async_checkpoint", RESUMABLE), ("train.progress_bar", RESUMABLE),
    ("train.peak_flops_per_device", RESUMABLE), ("train.eval_at_start", RESUMABLE), ("train.export_hf", RESUMABLE),
    ("train.allow_config_change", RESUMABLE), ("train.verbosity", RESUMABLE), ("train.wandb_*", RESUMABLE),
    ("train.*", ALLOWED),  # early stopping, best metric: how the rest of the run is judged
    ("parallel.*", RESUMABLE),  # checkpoints are restored into whatever mesh this run has
    ("model.remat_policy", RESUMABLE), ("model.dtype", ALLOWED),  # compute precision, not the weights
    ("model.*", INCOMPATIBLE), ("tokenizer.*", INCOMPATIBLE),
    ("peft.export_adapter", RESUMABLE), ("peft.dropout", ALLOWED), ("peft.*", INCOMPATIBLE),
    ("data.eval_paths", ALLOWED), ("data.eval_batch_size", RESUMABLE), ("data.*", INCOMPATIBLE),
    ("optim.*", ALLOWED),
    ("eval.*", RESUMABLE),  # pass@k during training: what is measured, not what is trained
    ("preference.precompute_ref", RESUMABLE), ("preference.*_field", INCOMPATIBLE),
    ("preference.max_prompt_len", INCOMPATIBLE), ("preference.*", ALLOWED),
    ("rl.sandbox_*", RESUMABLE), ("rl.log_completions", RESUMABLE),
    ("rl.prompts_path", INCOMPATIBLE), ("rl.builtin_task", INCOMPATIBLE), ("rl.eval_fraction", INCOMPATIBLE),
    ("rl.eval_prompts_path", INCOMPATIBLE), ("rl.algorithm", INCOMPATIBLE), ("rl.value_head", INCOMPATIBLE), ("rl.chat", INCOMPATIBLE),
    ("rl.env", INCOMPATIBLE),  # another environment renders other prompts (its tools) and other episodes
    ("rl.*", ALLOWED),
    # Only job `quickstart` reads its section (JOB_CLASSES): its stages get what they use through
    # their own fields, so a finished stage is not refused over, say, quickstart.grpo_steps.
    ("quickstart.*", RESUMABLE), ("data_pipeline.*", INCOMPATIBLE),
    ("job", INCOMPATIBLE), ("seed", INCOMPATIBLE),
    ("*", ALLOWED),
)

# Jobs that write their outputs in one go: a rerun with other settings would replace them.
_OUTPUT_JOB = (("train.progress_bar", RESUMABLE), ("train.verbosity", RESUMABLE),
               ("train.allow_config_change", RESUMABLE), ("parallel.*", RESUMABLE), ("eval.workers", RESUMABLE),
               ("data_pipeline.workers", RESUMABLE), ("*", INCOMPATIBLE))
JOB_CLASSES: dict[str, tuple[tuple[str, str], ...]] = {
    "eval": _OUTPUT_JOB, "data": _OUTPUT_JOB,
    # The teacher's completions are cached by prompt and settings, so other settings reuse what they
    # can; but the outputs would be replaced, so that takes train.allow_config_change. A review file
    # is made to filter the same run's output: rerunning with it is the workflow, not a change.
    "synth": (("train.progress_bar", RESUMABLE), ("train.verbosity", RESUMABLE),
              ("train.allow_config_change", RESUMABLE), ("parallel.*", RESUMABLE), ("synth.sandbox_workers", RESUMABLE),
              ("synth.plots", RESUMABLE), ("synth.review_path", RESUMABLE), ("synth.review_required", RESUMABLE),
              ("*", ALLOWED)),
    # Replies and critiques are cached by prompt and settings, as in synth: other settings reuse them.
    "constitutional": (("train.progress_bar", RESUMABLE), ("train.verbosity", RESUMABLE),
                       ("train.allow_config_change", RESUMABLE), ("parallel.*", RESUMABLE),
                       ("cai.sandbox_workers", RESUMABLE), ("cai.examples", RESUMABLE), ("*", ALLOWED)),
    # The stages' data and results are cached in the workdir: other settings would mix two runs.
    "quickstart": (("train.progress_bar", RESUMABLE), ("train.verbosity", RESUMABLE), ("quickstart.*", INCOMPATIBLE),
                   *CHANGE_CLASSES),
}


@dataclasses.dataclass(frozen=True)
class Change:
    field: str
    old: Any
    new: Any
    kind: str

    def __str__(self) -> str:
        return f"{self.field}: {json.dumps(self.old, default=str)} -> {json.dumps(self.new, default=str)}"


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def classify(field: str, job: str = "") -> str:
    for pattern, kind in JOB_CLASSES.get(job, CHANGE_CLASSES):
        if fnmatch.fnmatchcase(field, pattern):
            return kind
    return ALLOWED


def config_changes(old: dict, new: dict) -> list[Change]:
    """The fields whose values differ, classified by the new config's job."""
    old_flat, new_flat = flatten(old), flatten(new)
    job = new.get("job", "")
    return [Change(k, old_flat[k], v, classify(k, job)) for k, v in sorted(new_flat.items())
            if k in old_flat and old_flat[k] != v]


class ConfigChangeError(ValueError):
    """A rerun whose config does not fit the workdir's saved one."""


def check_config_change(workdir: str, old: dict | None, new: dict, allow: bool) -> list[Change]:
    """Raise ConfigChangeError for incompatible changes (always) and allowed ones without `allow`;
    return the changes that go through."""
    if old is None:
        return []
    changes = config_changes(old, new)
    if old.get("job") != new.get("job"):  # the rest of the diff says nothing more useful
        raise ConfigChangeError(f"--workdir {workdir} holds a {old.get('job')!r} run; the {new.get('job')!r} job "
                                f"cannot run in it (job: {json.dumps(old.get('job'))} -> {json.dumps(new.get('job'))}). "
                                "Use a new --workdir (an eval or a follow-up job gets its own; point "
                                "eval.checkpoint_dir or model.hf_path at this one)")
    refused = [c for c in changes if c.kind == INCOMPATIBLE]
    if refused:
        raise ConfigChangeError(
            f"--workdir {workdir} holds a run with a different config; these fields cannot change in a resumed "
            f"run: {_listing(refused)}. Use a new --workdir (or move this one away)")
    needs_allow = [c for c in changes if c.kind == ALLOWED]
    if needs_allow and not allow:
        raise ConfigChangeError(
            f"--workdir {workdir}: resuming with a changed {_listing(needs_allow)}; add "
            "--config.train.allow_config_change=True to continue with the new values, or use a new --workdir")
    return changes


def _listing(changes: Iterable[Change]) -> str:
    return "; ".join(str(c) for c in changes)
