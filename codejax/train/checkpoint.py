"""Checkpoints for the train loop: a thin layer over Orbax's CheckpointManager.

    ckpt = Checkpointer(workdir / "checkpoints", save_every=1000, keep_latest=2,
                        keep_best=1, best_metric="eval/loss")
    resumed = ckpt.restore_latest(abstract_like(state))
    if resumed is not None:
        start, state, data_state, _ = resumed
        data_iter.set_state(data_state)
    for step in range(start + 1, total + 1):
        state, metrics = train_step(state, next(data_iter))
        ckpt.save(step, state, data_iter.get_state(), metrics)
    ckpt.close()

One step directory holds three Orbax items: "state" (the train-state pytree,
written by StandardSave as tensorstore/OCDBT arrays), "data" (the data
iterator's JSON state) and "meta" (the JSON metrics of that step). Resume is
exact because all three come from the same step.

What Orbax 0.12.8 gives us, and what we add:
  * Async: `save` blocks only while the arrays are copied to host memory, then
    writes in a background thread, so the step that follows may donate the
    state buffers. The next `save`, `restore*`, `wait` or `close` joins it.
  * Atomicity: a step is written into `<step>.orbax-checkpoint-tmp*` and
    renamed to `<step>` only after every item is written and a
    `commit_success.txt` marker is in it (on GCS, where renames are not
    atomic, the marker alone decides). Step listing ignores tmp names, so a
    crashed save is invisible; a Checkpointer that opens the directory deletes
    the leftovers in the background (done before its first save). Old steps
    are deleted only after the new one commits.
  * Retention: Orbax's LatestN OR BestN preservation policies. Steps saved
    without `best_metric` are handed to Orbax with no metrics, so they are
    never candidates for best.
  * We add the fallback: a committed step can still be damaged afterwards
    (files lost, a disk filling up, a copy that stopped half-way), so
    `restore_latest` walks back to the newest step that restores, warning
    about each one it skips. Orbax does not checksum array bytes, so a flipped
    bit inside a data file is not detected; missing or truncated files are.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Any, Literal, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

logger = logging.getLogger(__name__)

STATE, DATA, META = "state", "data", "meta"
_MAX_ERROR_CHARS = 400  # tensorstore errors embed whole JSON specs; keep warnings readable


class Restored(NamedTuple):
    """What a restore returns; unpacks as `step, state, data_state, metrics`."""

    step: int
    state: Any
    data_state: dict
    metrics: dict


def abstract_like(tree: Any) -> Any:
    """Shapes, dtypes and shardings of `tree`, as the target of a restore.

    Restoring into a concrete pytree would need the arrays in memory first;
    jax.ShapeDtypeStruct leaves say the same thing for free. A sharded
    jax.Array keeps its sharding, so each host reads only its own shards.
    Anything else (numpy arrays, Python scalars) is placed on the first local
    device.
    """
    def leaf(x):
        if isinstance(x, jax.ShapeDtypeStruct):
            return x
        if isinstance(x, jax.Array):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        x = np.asarray(x)
        return jax.ShapeDtypeStruct(
            x.shape, x.dtype, sharding=jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))

    return jax.tree.map(leaf, tree)


def _to_json(tree: Any) -> Any:
    """Metrics usually arrive as jax/numpy scalars, which json cannot write."""
    if isinstance(tree, dict):
        return {str(k): _to_json(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_to_json(v) for v in tree]
    if isinstance(tree, (jax.Array, np.ndarray, np.generic)):
        return np.asarray(tree).tolist()
    return tree


def _short(err: BaseException) -> str:
    text = " ".join(f"{type(err).__name__}: {err}".split())  # one log line
    return text if len(text) <= _MAX_ERROR_CHARS else text[:_MAX_ERROR_CHARS] + " ..."


def _preservation_policy(keep_latest: int, keep_best: int, best_metric: str | None,
                         best_mode: str) -> ocm.PreservationPolicy:
    """Keep the newest `keep_latest` steps plus the best `keep_best` by metric.

    BestN sorts ascending by `get_metric_fn` and keeps the tail, so "min" needs
    `reverse=True`. `keep_checkpoints_without_metrics=False` stops steps saved
    without the metric from being kept forever (the default keeps them).
    """
    policies: list[ocm.PreservationPolicy] = [ocm.LatestN(n=keep_latest)]
    if keep_best > 0:
        policies.append(ocm.BestN(get_metric_fn=lambda m: float(m[best_metric]),
                                  reverse=best_mode == "min", n=keep_best,
                                  keep_checkpoints_without_metrics=False))
    return ocm.AnyPreservationPolicy(policies)


def _save_policy(save_every: int) -> ocm.SaveDecisionPolicy:
    """Every `save_every` steps, and on a preemption signal (multi-host TPU).

    Orbax's default also has InitialSavePolicy, which saves whatever step comes
    first into an empty directory; we leave it out so `save_every` means what
    it says (`force=True` is there for a first or last save).
    """
    return ocm.AnySavePolicy([ocm.FixedIntervalPolicy(save_every),
                              ocm.PreemptionCheckpointingPolicy()])


class _Manager(ocp.CheckpointManager):
    """CheckpointManager that survives one step's unreadable metrics file.

    On open, Orbax reads every step's metrics through `metrics(step)` and lets
    a JSON error escape the constructor, so one damaged file would make the
    whole directory impossible to resume from. Such a step is treated as
    having no metrics instead: it can still be restored, but is not a
    candidate for best.
    """

    def metrics(self, step: int) -> Any:
        try:
            return super().metrics(step)
        except Exception as err:  # pylint: disable=broad-except
            logger.warning("Checkpoint step %d in %s: unreadable metrics (%s); "
                           "not ranking it as a best checkpoint.", step, self.directory,
                           _short(err))
            return None


class Checkpointer:
    """Saves and restores (train state, data-iterator state, metrics) by step.

    Create one per run directory in every process (Orbax coordinates hosts),
    call `save` every step and let `save_every` decide, and `close` at the end.
    Reopening the directory in a new process finds the committed steps.
    """

    def __init__(self, directory, *, save_every: int, keep_latest: int = 2,
                 keep_best: int = 0, best_metric: str | None = None,
                 best_mode: Literal["min", "max"] = "min", async_save: bool = True):
        if save_every < 1:
            raise ValueError(f"save_every must be >= 1, got {save_every}")
        if keep_latest < 1:
            # The newest step is what a resume needs; never let retention delete it.
            raise ValueError(f"keep_latest must be >= 1, got {keep_latest}")
        if keep_best < 0:
            raise ValueError(f"keep_best must be >= 0, got {keep_best}")
        if keep_best > 0 and best_metric is None:
            raise ValueError("keep_best > 0 needs best_metric, the metrics key to rank by")
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}")
        self.best_metric = best_metric
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=_save_policy(save_every),
            preservation_policy=_preservation_policy(keep_latest, keep_best, best_metric,
                                                     best_mode),
            # best_fn makes Orbax write the metrics it ranks by and answer best_step().
            best_fn=(lambda m: float(m[best_metric])) if best_metric else None,
            best_mode=best_mode,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=async_save,
        )
        # Orbax's tensorstore paths must be absolute; a relative --workdir is natural on the CLI.
        directory = str(directory)
        if "://" not in directory:
            directory = os.path.abspath(directory)
        self._manager = _Manager(directory, options=options)
        self._unrestorable: list[int] = []  # steps restore_latest had to skip

    @property
    def directory(self):
        return self._manager.directory

    def save(self, step: int, state: Any, data_state: dict, metrics: dict | None = None,
             force: bool = False) -> bool:
        """Starts saving `step` if it is due (or `force`); True if it started.

        Returns once the arrays are on the host; call `wait` to know it is on
        disk. A step at or below the newest saved one is skipped unless
        forced, and forcing a step that already exists raises Orbax's
        StepAlreadyExistsError.

        The first save after `restore_latest` skipped damaged steps deletes
        them: they are newer than the resumed step, so Orbax would refuse
        every save up to them, and an exact resume writes them again anyway.
        """
        self._drop_unrestorable()
        metrics = _to_json(dict(metrics or {}))
        ranked = metrics if self.best_metric is not None and self.best_metric in metrics else None
        if ranked is not None and not math.isfinite(float(ranked[self.best_metric])):
            ranked = None  # a NaN loss would sort arbitrarily; it is never "best"
        args = ocp.args.Composite(**{
            STATE: ocp.args.StandardSave(state),
            DATA: ocp.args.JsonSave(_to_json(data_state)),
            META: ocp.args.JsonSave(metrics),
        })
        return bool(self._manager.save(step, args=args, metrics=ranked, force=force))

    def restore(self, step: int, abstract_state: Any) -> Restored:
        """Restores `step` into the structure, dtypes and shardings of `abstract_state`."""
        self.wait()  # the step may still be in flight from our own save
        args = ocp.args.Composite(**{
            STATE: ocp.args.StandardRestore(abstract_state),
            DATA: ocp.args.JsonRestore(),
            META: ocp.args.JsonRestore(),
        })
        out = self._manager.restore(step, args=args)
        return Restored(int(step), out[STATE], out[DATA], out[META])

    def restore_latest(self, abstract_state: Any) -> Restored | None:
        """Restores the newest step that restores; None if there are no steps.

        A step that fails is logged as a warning and the next older one is
        tried. If every step fails we raise rather than return None: that is
        almost always an `abstract_state` that does not match the checkpoints,
        and silently starting from scratch would throw the run away.
        """
        self.wait()
        self._unrestorable = []
        failures = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                restored = self.restore(step, abstract_state)
                self._unrestorable = [s for s, _ in failures]
                return restored
            except Exception as err:  # pylint: disable=broad-except
                failures.append((step, err))
                logger.warning("Checkpoint step %d in %s could not be restored (%s); "
                               "falling back to an earlier step.", step, self.directory,
                               _short(err))
        if failures:
            steps = ", ".join(str(s) for s, _ in failures)
            raise RuntimeError(f"No checkpoint in {self.directory} could be restored "
                               f"(tried steps {steps}); the last error was "
                               f"{_short(failures[-1][1])}") from failures[-1][1]
        return None

    def _drop_unrestorable(self) -> None:
        for step in self._unrestorable:
            if step in self._manager.all_steps():
                logger.warning("Deleting checkpoint step %d in %s: it could not be restored and "
                               "training resumed from an earlier step.", step, self.directory)
                self._manager.delete(step)
        self._unrestorable = []

    def all_steps(self) -> list[int]:
        """Committed (and in-flight) steps kept by retention, ascending."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """Kept step with the best `best_metric`; None without a metric or candidates."""
        if self.best_metric is None:
            return None  # Orbax would answer the latest step here
        return self._manager.best_step()

    def wait(self) -> None:
        """Blocks until pending async saves are on disk and old steps deleted."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------- a finished run's checkpoints

def find_checkpoint(path: str, field: str = "checkpoint_dir") -> tuple[str, int, str]:
    """(step dir, step, run dir) of the newest step for a run workdir, its checkpoints/ folder or a step folder.
    Errors name `field`, the config field that gave the path."""
    from etils import epath
    root = epath.Path(path)
    if (root / STATE).exists() and root.name.isdigit():  # one step folder
        return str(root), int(root.name), str(root.parent.parent)
    ckpt_dir = root / "checkpoints" if (root / "checkpoints").is_dir() else root
    if not ckpt_dir.is_dir():
        raise FileNotFoundError(f"{field}={path!r} does not exist")
    steps = ocp.utils.checkpoint_steps(ckpt_dir)  # finalized steps only (no in-flight tmp dirs)
    if not steps:
        raise FileNotFoundError(f"{field}={path!r}: no finished checkpoint steps in {ckpt_dir}")
    step = max(steps)
    run_dir = ckpt_dir.parent if ckpt_dir.name == "checkpoints" else ckpt_dir
    return str(ckpt_dir / str(step)), step, str(run_dir)


def restore_params(step_dir: str, target: Any) -> Any:
    """The train state's `params` entry from a step folder, restored into `target`'s structure,
    dtypes and shardings (a partial restore: opt_state, step and rng stay on disk)."""
    item = {"params": abstract_like(target)}
    args = ocp.args.PyTreeRestore(item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
                                  partial_restore=True)
    try:
        with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as checkpointer:
            return checkpointer.restore(os.path.join(step_dir, STATE), args=args)["params"]
    except Exception as e:  # noqa: BLE001 - Orbax's own error, with what to check
        raise ValueError(f"{step_dir}: the checkpoint does not match the model built from the config "
                         f"({type(e).__name__}: {str(e)[:400]}); the run's config.json (or the model and peft "
                         "sections given here) must describe the trained model") from e
