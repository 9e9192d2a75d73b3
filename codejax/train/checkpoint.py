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

One step directory holds four Orbax items: "state" (the train-state pytree,
written by StandardSave as tensorstore/OCDBT arrays), "data" (the data
iterator's JSON state), "meta" (the JSON metrics of that step) and "checksums"
(of every array and of the two JSON items, computed at save time). Resume is
exact because all of them come from the same step.

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
    (files lost, a disk filling up, a copy that stopped half-way, a flipped
    bit), so `restore_latest` walks back to the newest step that restores and
    matches its checksums, warning about each one it skips. Orbax does not
    checksum array bytes; we do: per array, two sums of its raw bits modulo
    2**32 (plain and position-weighted), computed on device in the arrays'
    own shardings, so any single flipped bit changes them and a restore into
    another mesh gives the same figures. A skipped step is moved aside to
    `checkpoints/corrupt-<step>` (never deleted) once an older step has
    restored.
  * I/O errors are not corruption: a restore that fails with EIO, a timeout
    or an unavailable store is retried, and if it keeps failing the run stops
    with the checkpoint left as it is, rather than falling back (and later
    setting aside a good step).
  * A background save that failed (a full disk) is reported at the next
    step by `check_for_errors` as one `CheckpointWriteError` line.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import time
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm

logger = logging.getLogger(__name__)

STATE, DATA, META, CHECKSUMS = "state", "data", "meta", "checksums"
_MAX_ERROR_CHARS = 400  # tensorstore errors embed whole JSON specs; keep warnings readable
IO_RETRIES, IO_RETRY_SECONDS = 3, 1.0
# errno values and store status words of errors worth retrying: the bytes may well be fine.
_TRANSIENT_ERRNOS = {errno.EIO, errno.EAGAIN, errno.ETIMEDOUT, errno.ESTALE, errno.EBUSY, errno.EINTR,
                     errno.ECONNRESET, errno.ECONNREFUSED, errno.ENETDOWN, errno.ENETUNREACH, errno.EHOSTUNREACH}
_TRANSIENT_WORDS = ("Input/output error", "UNAVAILABLE", "DEADLINE_EXCEEDED", "Connection reset",
                    "timed out")


class CorruptCheckpointError(ValueError):
    """A step whose restored bytes do not match the checksums stored with it."""


class CheckpointIOError(OSError):
    """Reading a checkpoint kept failing with I/O errors; it was left as it is."""


class CheckpointWriteError(OSError):
    """A checkpoint save failed (a full disk, say); the earlier checkpoints are intact."""


def _causes(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def is_transient_io_error(err: BaseException) -> bool:
    """EIO, timeouts, an unavailable store: worth a retry, not proof that the checkpoint is damaged.
    A missing file (ENOENT) is damage: retrying cannot bring it back."""
    for e in _causes(err):
        if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS:
            return True
        if isinstance(e, (TimeoutError, ConnectionError)):
            return True
        if any(word in str(e) for word in _TRANSIENT_WORDS):
            return True
    return False


def is_disk_full(err: BaseException) -> bool:
    return any((isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or "No space left" in str(e)
               or "Disk quota exceeded" in str(e) for e in _causes(err))


# ----------------------------------------------------------------------------- checksums

def _bits(x: jax.Array) -> jax.Array:
    """The raw bits of `x` as a flat uint32 vector (narrower types widened, wider ones split)."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        return x.reshape(-1).astype(jnp.uint32)
    width = x.dtype.itemsize
    if width == 8:
        return jax.lax.bitcast_convert_type(x, jnp.uint32).reshape(-1)
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[width]
    return jax.lax.bitcast_convert_type(x, unsigned).reshape(-1).astype(jnp.uint32)


@jax.jit
def _leaf_sums(x: jax.Array) -> jax.Array:
    """(sum of the uint32 words of x, sum of word * (index + 1)), both modulo 2**32. Integer sums are
    exact in any order, so a sharded array gives the same figures in any mesh."""
    words = _bits(x)
    index = jnp.arange(1, words.size + 1, dtype=jnp.uint32)
    return jnp.stack([jnp.sum(words, dtype=jnp.uint32), jnp.sum(words * index, dtype=jnp.uint32)])


_tree_sums = jax.jit(lambda tree: jax.tree.map(_leaf_sums, tree))


def state_checksums(state: Any) -> dict[str, list[int]]:
    """{array path: [sum, weighted sum]} of a state pytree."""
    try:
        sums = _tree_sums(state)  # one program when the leaves share their devices (a run's state does)
    except ValueError:  # leaves committed to different devices: one small program per leaf
        sums = jax.tree.map(_leaf_sums, state)
    sums = jax.device_get(sums)
    return {jax.tree_util.keystr(path): [int(v) for v in np.asarray(leaf)]
            for path, leaf in jax.tree_util.tree_leaves_with_path(sums)}


def json_checksum(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, allow_nan=True).encode()).hexdigest()


def verify_checksums(step: int, stored: dict, state: Any, data: Any, meta: Any) -> None:
    """Raise CorruptCheckpointError naming the first item or array whose checksum differs."""
    for name, item in ((DATA, data), (META, meta)):
        if stored.get(name) != json_checksum(item):
            raise CorruptCheckpointError(f"step {step}: the {name!r} item does not match its checksum")
    expected, got = stored.get(STATE, {}), state_checksums(state)
    for path in sorted(set(expected) | set(got)):
        if expected.get(path) != got.get(path):
            raise CorruptCheckpointError(f"step {step}: array {path} does not match its checksum "
                                         "(the bytes on disk changed after the save)")


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
        self._saving: int | None = None  # the step of the last save started, for error messages

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
        """
        metrics = _to_json(dict(metrics or {}))
        ranked = metrics if self.best_metric is not None and self.best_metric in metrics else None
        if ranked is not None and not math.isfinite(float(ranked[self.best_metric])):
            ranked = None  # a NaN loss would sort arbitrarily; it is never "best"
        if not (force or self._manager.should_save(step)):
            return False
        data_json = _to_json(data_state)
        checksums = {STATE: state_checksums(state), DATA: json_checksum(data_json), META: json_checksum(metrics)}
        args = ocp.args.Composite(**{
            STATE: ocp.args.StandardSave(state),
            DATA: ocp.args.JsonSave(data_json),
            META: ocp.args.JsonSave(metrics),
            CHECKSUMS: ocp.args.JsonSave(checksums),
        })
        self.check_for_errors()  # a failed background save of the previous step is reported as that step
        previous, self._saving = self._saving, step  # a failure from here on is this step's
        with self._reporting_write_errors():
            started = bool(self._manager.save(step, args=args, metrics=ranked, force=force))
        if not started:
            self._saving = previous
        return started

    def _reporting_write_errors(self):
        return _WriteErrors(self)

    def check_for_errors(self) -> None:
        """Raise CheckpointWriteError now if a background save has failed (cheap; call it every step)."""
        with self._reporting_write_errors():
            self._manager.check_for_errors()

    def restore(self, step: int, abstract_state: Any) -> Restored:
        """Restores `step` into the structure, dtypes and shardings of `abstract_state`."""
        self.wait()  # the step may still be in flight from our own save
        items = {STATE: ocp.args.StandardRestore(abstract_state), DATA: ocp.args.JsonRestore(),
                 META: ocp.args.JsonRestore()}
        # Steps written before checksums existed restore without them (and are not verified).
        checked = (self._step_path(step) / CHECKSUMS).exists()
        if checked:
            items[CHECKSUMS] = ocp.args.JsonRestore()
        out = self._manager.restore(step, args=ocp.args.Composite(**items))
        if checked:
            verify_checksums(step, out[CHECKSUMS], out[STATE], out[DATA], out[META])
        else:
            logger.warning("Checkpoint step %d in %s has no checksums (an older codejax wrote it); not verified",
                           step, self.directory)
        return Restored(int(step), out[STATE], out[DATA], out[META])

    def _step_path(self, step: int):
        from etils import epath
        return epath.Path(self.directory) / str(step)

    def _restore_retrying(self, step: int, abstract_state: Any) -> Restored:
        """`restore`, retried on transient I/O errors; CheckpointIOError when they persist."""
        for attempt in range(1, IO_RETRIES + 1):
            try:
                return self.restore(step, abstract_state)
            except Exception as err:  # pylint: disable=broad-except
                if not is_transient_io_error(err):
                    raise
                if attempt == IO_RETRIES:
                    raise CheckpointIOError(
                        f"reading checkpoint step {step} in {self.directory} failed with an I/O error "
                        f"{IO_RETRIES} times ({_short(err)}); it is left as it is: check the disk or the "
                        "store and rerun") from err
                logger.warning("I/O error reading checkpoint step %d in %s (%s); retrying (%d of %d)", step,
                               self.directory, _short(err), attempt, IO_RETRIES - 1)
                time.sleep(IO_RETRY_SECONDS * attempt)
        raise AssertionError("unreachable")

    def restore_latest(self, abstract_state: Any) -> Restored | None:
        """Restores the newest step that restores and matches its checksums; None if there are no steps.

        A damaged step is logged as a warning and the next older one is
        tried; once one restores, the damaged newer steps are moved aside to
        `corrupt-<step>` (Orbax would refuse every save up to them, and an
        exact resume writes them again). If every step fails we raise rather
        than return None and set nothing aside: that is almost always an
        `abstract_state` that does not match the checkpoints (a changed model
        or PEFT setting), and silently starting from scratch would throw the
        run away. I/O errors are retried and then raised, never taken for
        damage.
        """
        self.wait()
        failures = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                restored = self._restore_retrying(step, abstract_state)
            except CheckpointIOError:
                raise
            except Exception as err:  # pylint: disable=broad-except
                failures.append((step, err))
                logger.warning("Checkpoint step %d in %s could not be restored (%s); "
                               "falling back to an earlier step.", step, self.directory,
                               _short(err))
                continue
            self._set_aside([s for s, _ in failures])
            return restored
        if failures:
            steps = ", ".join(str(s) for s, _ in failures)
            raise RuntimeError(f"No checkpoint in {self.directory} could be restored "
                               f"(tried steps {steps}); the last error was "
                               f"{_short(failures[-1][1])}. If the model, tokenizer or peft settings changed, "
                               "the checkpoints belong to another model: use a new --workdir") from failures[-1][1]
        return None

    def _set_aside(self, steps: list[int]) -> None:
        """Move damaged steps to `corrupt-<step>` (process 0, then every host rereads the listing)."""
        if not steps:
            return
        if jax.process_index() == 0:
            for step in steps:
                src = self._step_path(step)
                dst = src.parent / f"corrupt-{step}"
                n = 1
                while dst.exists():
                    n += 1
                    dst = src.parent / f"corrupt-{step}-{n}"
                src.rename(dst)
                logger.warning("Checkpoint step %d could not be restored and training resumed from an "
                               "earlier step; it is kept in %s", step, dst)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("codejax_checkpoint_set_aside")
        self._manager.reload()

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
        with self._reporting_write_errors():
            self._manager.wait_until_finished()

    def close(self) -> None:
        with self._reporting_write_errors():
            self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _WriteErrors:
    """Turns a failed save (often surfacing from a background thread) into one CheckpointWriteError line."""

    def __init__(self, checkpointer: Checkpointer):
        self.checkpointer = checkpointer

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb) -> bool:
        if err is None or isinstance(err, (CheckpointWriteError, KeyboardInterrupt)) or not isinstance(err, Exception):
            return False
        c = self.checkpointer
        step = f"step {c._saving}" if c._saving is not None else "a checkpoint"
        if is_disk_full(err):
            raise CheckpointWriteError(f"disk full while saving {step} in {c.directory}; previous "
                                       "checkpoints intact: free some space and rerun to resume") from err
        if any(isinstance(e, OSError) for e in _causes(err)):
            raise CheckpointWriteError(f"saving {step} in {c.directory} failed ({_short(err)}); previous "
                                       "checkpoints intact") from err
        return False


# ----------------------------------------------------------------------------- a finished run's checkpoints

def find_checkpoint(path: str, field: str = "checkpoint_dir") -> tuple[str, int, str]:
    """(step dir, step, run dir) of the newest step for a run workdir, its checkpoints/ folder or a step folder.
    Errors name `field`, the config field that gave the path."""
    from etils import epath
    # Orbax restores only absolute paths; a relative --config.eval.checkpoint_dir is the user's cwd's.
    root = epath.Path(path if "://" in path else os.path.abspath(path))
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
    hint = ("the run's config.json (or the model and peft sections given here) must describe the trained "
            "model")
    try:
        with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as checkpointer:
            params = checkpointer.restore(os.path.join(step_dir, STATE), args=args)["params"]
    except Exception as e:  # noqa: BLE001 - Orbax's own error, with what to check
        raise ValueError(f"{step_dir}: the checkpoint does not match the model built from the config "
                         f"({type(e).__name__}: {str(e)[:400]}); {hint}") from e
    # A partial restore leaves the target's leaves that the checkpoint lacks as they were (abstract):
    # name them here instead of letting them fail later as "ShapeDtypeStruct is not a valid JAX type".
    missing = [jax.tree_util.keystr(p) for p, leaf in jax.tree_util.tree_leaves_with_path(params)
               if isinstance(leaf, jax.ShapeDtypeStruct)]
    if missing:
        raise ValueError(f"{step_dir}: the checkpoint has no {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''} ({len(missing)} arrays the model built from the "
                         f"config needs); {hint}")
    return params
