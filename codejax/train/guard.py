"""What every job holds from start-up to its last write: the workdir lock, the config check and the stop signals.

    summary = run_guarded(job_fn, config, workdir)

1. **The lock.** WORKDIR/.codejax.lock is held with flock(2) for the whole job, and says who
   holds it (pid, host, job, start time). The kernel drops the lock when the holder exits,
   however it exits (SIGKILL, OOM, a power cut on a local disk), so a lock file left behind
   is stale by construction: the next run takes it over and says so. A second run while the
   first is alive is refused at once with a one-line `WorkdirLocked` naming the holder.
   With several hosts, process 0 takes it. A remote workdir (gs://...) is not locked.
2. **The config check** (codejax/train/config_diff.py) compares the new config with the
   workdir's config.json before anything is written or restored.
3. **The stop signals.** SIGINT (Ctrl-C) and SIGTERM (preemption) are caught from start-up to
   the final save. Inside the training loop (the run scaffold defers them) they only set a
   flag: the loop finishes its step, saves a checkpoint and writes summary.json with
   `stop_reason` "interrupted" or "SIGTERM". Anywhere else (model loading, data set-up, the
   eval and data jobs) the first signal raises `Interrupted`, which the job's clean-up code
   sees like any exception, and `run_guarded` writes summary.json. A second Ctrl-C leaves at
   once. The CLI exits 130 after an interruption (the shell's code for Ctrl-C) and 0 after a
   SIGTERM stop, which is a clean, resumable end.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import signal
import socket
import sys
import threading
from typing import Any, Callable, Iterator

import jax

from codejax.train.config_diff import check_config_change
from codejax.train.workdir import read_json, saved_config, write_json

log = logging.getLogger(__name__)

INTERRUPTED, SIGTERM = "interrupted", "SIGTERM"
STOPPED_BY_SIGNAL = (INTERRUPTED, SIGTERM)
LOCK_FILE = ".codejax.lock"


class WorkdirLocked(RuntimeError):
    """Another live run holds the workdir."""


class Interrupted(KeyboardInterrupt):
    """The first SIGINT/SIGTERM outside the training loop; `reason` is INTERRUPTED or SIGTERM."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ----------------------------------------------------------------------------- the lock

class WorkdirLock:
    """An exclusive flock on WORKDIR/.codejax.lock; `holder` describes the process that has it."""

    def __init__(self, workdir: str, job: str = ""):
        self.workdir, self.job = workdir, job
        self.path = os.path.join(workdir, LOCK_FILE)
        self._fd: int | None = None

    def acquire(self) -> "WorkdirLock":
        os.makedirs(self.workdir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise WorkdirLocked(f"--workdir {self.workdir} is in use by {describe_holder(holder)}; wait for it to "
                                "end, stop it, or use another --workdir") from None
        stale = _read_holder(fd)
        if stale:
            log.info("%s: the previous run (%s) ended without releasing its lock; taking it over", self.workdir,
                     describe_holder(stale))
        me = {"pid": os.getpid(), "host": socket.gethostname(), "job": self.job,
              "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "argv": sys.argv[:8]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Empty the holder record and drop the lock. The file stays: unlinking a locked file
        would let a third process lock a fresh inode while a second still waits on the old one."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        os.close(self._fd)  # closing the only descriptor drops the flock
        self._fd = None

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> dict:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        return json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}


def describe_holder(holder: dict) -> str:
    if not holder:
        return "another process (no holder record)"
    job = f" (job {holder['job']})" if holder.get("job") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{job}, since {holder.get('started')}"


# ----------------------------------------------------------------------------- the stop signals

class StopSignals:
    """SIGINT/SIGTERM handling shared by the guard and the run scaffold (one per process).

    `handling(defer=...)` installs the handlers on the outermost entry (main thread only;
    elsewhere, e.g. some notebook kernels, signals keep their default behaviour) and
    restores the previous ones on the outermost exit. While any `defer=True` block is open
    a signal only sets `received`; otherwise the first one raises `Interrupted`.
    """

    def __init__(self):
        self.received: str | None = None
        self.exit_on_second = False  # the CLI: a second Ctrl-C ends the process at once
        self._depth = 0
        self._defer = 0
        self._previous: dict[int, Any] = {}

    @contextlib.contextmanager
    def handling(self, defer: bool) -> Iterator["StopSignals"]:
        if self._depth == 0:
            self.received = None
            if threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGINT, signal.SIGTERM):
                    self._previous[sig] = signal.signal(sig, self._handle)
        self._depth += 1
        self._defer += int(defer)
        try:
            yield self
        finally:
            self._defer -= int(defer)
            self._depth -= 1
            if self._depth == 0:
                for sig, previous in self._previous.items():
                    signal.signal(sig, previous)
                self._previous = {}

    def _handle(self, signum, frame) -> None:
        del frame
        reason = INTERRUPTED if signum == signal.SIGINT else SIGTERM
        if self.received is not None:
            if signum == signal.SIGINT:  # the second Ctrl-C: leave now
                if self.exit_on_second:
                    sys.stderr.write("\ninterrupted again: exiting now, without saving\n")
                    os._exit(130)
                raise KeyboardInterrupt
            return  # a repeated SIGTERM: the save under way goes on
        self.received = reason
        if self._defer:
            sys.stderr.write(f"\n{reason}: stopping after this step with a checkpoint "
                             "(Ctrl-C again to exit at once, without saving)\n" if reason == INTERRUPTED else
                             f"\n{reason}: stopping after this step with a checkpoint\n")
            return
        raise Interrupted(reason)


SIGNALS = StopSignals()


# ----------------------------------------------------------------------------- the guard

def _is_remote(workdir: str) -> bool:
    return "://" in workdir


def run_guarded(fn: Callable[[Any, str], dict], config, workdir: str,
                prepare: Callable[[Any], Any] | None = None) -> dict:
    """Run job `fn(config, workdir)` under the workdir lock, the config check and the stop signals.
    `prepare(config) -> config` runs once the lock is held, before the check (it may take a while:
    building the built-in rows), so a refused run is refused in seconds."""
    is_main = jax.process_index() == 0
    lock = WorkdirLock(workdir, getattr(config, "job", "")) if is_main and not _is_remote(workdir) else None
    with SIGNALS.handling(defer=False), (lock if lock is not None else contextlib.nullcontext()):
        if prepare is not None:
            config = prepare(config)
        if not _is_remote(workdir):
            new = json.loads(config.to_json_best_effort())
            changes = check_config_change(workdir, saved_config(workdir), new,
                                          allow=bool(config.train.allow_config_change))
            for change in changes:
                log.log(logging.WARNING if change.kind != "resumable" else logging.INFO,
                        "config change (%s): %s", change.kind, change)
        try:
            return fn(config, workdir)
        except Interrupted as stop:
            return _interrupted_summary(workdir, stop.reason, is_main)


def _interrupted_summary(workdir: str, reason: str, is_main: bool) -> dict:
    """summary.json for a stop outside the training loop (start-up, the eval and data jobs)."""
    path = os.path.join(workdir, "summary.json")
    summary = {"stop_reason": reason, "stopped_in": "start-up or a job step outside the training loop"}
    previous = read_json(path)
    if previous and previous.get("stopped_in") is None:
        summary["previous_summary"] = previous  # a finished run's figures are kept, not overwritten
    if is_main and not _is_remote(workdir):
        write_json(path, summary)
    log.warning("%s: stopped; %s written", reason, path)
    return summary
