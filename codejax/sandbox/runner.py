"""The parent side: spawn the harness per program, feed it, watch it, judge it.

Each program gets a fresh temporary directory (its cwd and HOME, deleted afterwards), a
scrubbed environment, a process group of its own (killed as a whole), and the
namespaces of `namespaces.detect`. The parent writes the config to the child's stdin and
reads stdout/stderr incrementally with a selector, keeping at most `max_output_bytes` of
each: past that, or past the wall-clock deadline, it SIGKILLs the process group. A pidfd
tells it when the child exits. `run_programs` drives many of these from a thread pool:
the threads only wait on pipes, the work happens in the children.
"""
from __future__ import annotations

import atexit
import concurrent.futures
import marshal
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Iterable, Sequence

from codejax.sandbox import namespaces as iso_mod
from codejax.sandbox.program import Limits, Program, Result, Status

HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_harness.py")
EXC, EXIT, MEM, TAMPER, BUILTINS, HARNESS_ERROR = 111, 112, 113, 114, 115, 116  # as in _harness.py
_CHUNK = 1 << 16
_EXIT_GRACE_S = 0.5  # after the child exits, how long leftover writers may keep its pipes open
# `unshare --fork` cannot re-raise a child's SIGKILL on itself; it exits 1 with this instead.
_UNSHARE_SIGKILL = b"unshare: sigprocmask unblock failed: Invalid argument"
# A process group of its own, so the whole group can be killed. Not a new session: Linux
# schedules sessions (autogroups) against each other, and a session per program would give
# a batch of programs more CPU weight than the process that runs them.
_OWN_GROUP = {"process_group": 0} if sys.version_info >= (3, 11) else {"start_new_session": True}


def run_program(program: Program, limits: Limits | None = None, *, python: str | None = None,
                site_packages: bool = False, read_paths: Sequence[str] = (), namespaces: bool = True,
                tmp_root: str | None = None) -> Result:
    """Run one program with its tests in the sandbox and judge it.

    python: the interpreter (default: this one). It runs with `-I -S -B`: isolated from the
        environment and user site, no site-packages (`site_packages=True` drops `-S`, e.g.
        for numpy), no .pyc writes.
    read_paths: extra files/directories the program may read, besides its working
        directory and the interpreter's own library directories.
    namespaces: False skips the kernel namespaces (the audit hook and rlimits remain).
    tmp_root: where the per-program temporary directories are made (default: $TMPDIR).
    """
    limits = limits or Limits()
    python = python or sys.executable
    isolation = iso_mod.detect(python) if namespaces else iso_mod.NO_NAMESPACES
    start = time.monotonic()
    try:
        tmp = os.path.realpath(tempfile.mkdtemp(prefix="codejax-sandbox-", dir=tmp_root))
    except OSError as e:
        return Result(Status.ERROR, f"cannot create a working directory: {e}", name=program.name)
    try:
        return _execute(program, limits, python, site_packages, read_paths, isolation, tmp, start)
    except Exception as e:  # noqa: BLE001 - a sandbox failure, reported as such
        return Result(Status.ERROR, f"sandbox error: {type(e).__name__}: {e}", wall_s=time.monotonic() - start,
                      name=program.name)
    finally:
        _remove_tree(tmp)


def run_programs(programs: Iterable[Program], limits: Limits | None = None, *, workers: int | None = None,
                 progress: bool | None = None, **kwargs) -> list[Result]:
    """Run many programs over `workers` parallel children; results come back in input order.

    progress: a tqdm bar on stderr (default: on for 100 programs or more).
    kwargs: passed to `run_program` (python, site_packages, read_paths, namespaces, tmp_root).
    """
    programs = list(programs)
    workers = max(1, workers or os.cpu_count() or 1)
    if progress is None:
        progress = len(programs) >= 100
    if kwargs.get("namespaces", True):
        iso_mod.detect(kwargs.get("python") or sys.executable)  # probe once, before the threads start
    results: list[Result | None] = [None] * len(programs)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(programs), desc="sandbox", unit="prog", dynamic_ncols=True)
    passed = 0
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="codejax-sandbox") as pool:
        futures = {pool.submit(run_program, p, limits, **kwargs): i for i, p in enumerate(programs)}
        try:
            for fut in concurrent.futures.as_completed(futures):
                res = fut.result()
                results[futures[fut]] = res
                passed += res.passed
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(passed=passed, refresh=False)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            if bar is not None:
                bar.close()
    return results  # type: ignore[return-value]


def _execute(program: Program, limits: Limits, python: str, site_packages: bool, read_paths: Sequence[str],
             isolation: iso_mod.Isolation, tmp: str, start: float) -> Result:
    token = secrets.token_hex(16).encode()
    mb = 1 << 20
    rlimits = (("RLIMIT_AS", limits.memory_mb * mb), ("RLIMIT_CPU", limits.cpu_seconds),
               ("RLIMIT_FSIZE", limits.file_size_mb * mb), ("RLIMIT_CORE", 0),
               ("RLIMIT_NOFILE", limits.max_open_files),
               # Without a user namespace RLIMIT_NPROC would count all of the host user's processes.
               ("RLIMIT_NPROC", limits.max_processes if isolation.user_namespace else None))
    ready_r, ready_w = os.pipe()
    payload = marshal.dumps({"token": token, "ready_fd": ready_w, "program": program.code, "tests": program.tests,
                             "stdin": program.stdin.encode("utf-8", "surrogateescape"), "tmp": tmp,
                             "read_paths": tuple(os.path.realpath(p) for p in read_paths), "rlimits": rlimits})
    argv = [*isolation.prefix, python, "-I", *(() if site_packages else ("-S",)), "-B", _compiled_harness(python)]
    try:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    cwd=tmp, env=iso_mod.base_env(tmp), pass_fds=(ready_w,), **_OWN_GROUP)
        finally:
            os.close(ready_w)
    except OSError as e:
        os.close(ready_r)
        return Result(Status.ERROR, f"cannot start the sandbox: {e}", wall_s=time.monotonic() - start,
                      name=program.name)
    try:
        out, err, overflow, timed_out, started = _communicate(proc, payload, limits.max_output_bytes,
                                                              start + limits.timeout_s, ready_r)
    finally:
        os.close(ready_r)
        _kill_group(proc)
        cpu_s = _reap(proc)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None and not f.closed:
                try:
                    f.close()
                except OSError:
                    pass
    wall = time.monotonic() - start
    res = _judge(proc.returncode, out, err, token, overflow, timed_out, cpu_s, limits, started)
    res.wall_s, res.name = wall, program.name
    return res


_HARNESS_CACHE: dict[str, str] = {}
_HARNESS_LOCK = threading.Lock()


def _compiled_harness(python: str) -> str:
    """The harness as a .pyc compiled by `python`, in a private directory of this process.

    A script is compiled from source on every start (about 4 ms of the harness's 10); a .pyc
    is not. The directory is ours (mkdtemp, mode 0700), so nobody can swap the file. Falls
    back to the source file if compiling fails."""
    with _HARNESS_LOCK:
        path = _HARNESS_CACHE.get(python)
        if path is None:
            path = HARNESS
            try:
                d = tempfile.mkdtemp(prefix="codejax-sandbox-harness-")
                atexit.register(shutil.rmtree, d, True)
                out = os.path.join(d, "harness.pyc")
                subprocess.run([python, "-I", "-S", "-c", "import py_compile, sys; "
                                "py_compile.compile(sys.argv[1], cfile=sys.argv[2], doraise=True)", HARNESS, out],
                               check=True, capture_output=True, timeout=60)
                path = out
            except (OSError, subprocess.SubprocessError):
                pass
            _HARNESS_CACHE[python] = path
        return path


def _communicate(proc: subprocess.Popen, payload: bytes, cap: int, deadline: float, ready_fd: int):
    """Write the payload, read both streams up to `cap` bytes each, stop at exit/overflow/deadline.
    `ready_fd` turns readable when the harness is about to run untrusted code."""
    out_fd, err_fd, in_fd = proc.stdout.fileno(), proc.stderr.fileno(), proc.stdin.fileno()
    bufs = {out_fd: bytearray(), err_fd: bytearray()}
    names = {out_fd: "stdout", err_fd: "stderr"}
    pending = memoryview(payload)
    overflow, timed_out, exited, grace_end, started = "", False, False, None, False
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        pidfd = None
    sel = selectors.DefaultSelector()
    try:
        for fd in bufs:
            sel.register(fd, selectors.EVENT_READ)
        os.set_blocking(in_fd, False)
        sel.register(in_fd, selectors.EVENT_WRITE)
        if pidfd is not None:
            sel.register(pidfd, selectors.EVENT_READ)
        sel.register(ready_fd, selectors.EVENT_READ)
        open_streams = 2
        while (open_streams or not exited) and not overflow:
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                break
            if grace_end is not None and now >= grace_end:
                break
            wait = min(deadline, grace_end or deadline) - now
            if pidfd is None:
                wait = min(wait, 0.02)
            for key, _ in sel.select(wait):
                fd = key.fd
                if fd == in_fd:
                    try:
                        pending = pending[os.write(in_fd, pending[:_CHUNK]):]
                    except BlockingIOError:
                        continue
                    except OSError:  # the child went away before reading it all
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(in_fd)
                        proc.stdin.close()
                elif fd == ready_fd:
                    started = started or os.read(ready_fd, 1) == b"1"
                    sel.unregister(ready_fd)
                elif fd == pidfd:
                    sel.unregister(pidfd)
                    exited, grace_end = True, time.monotonic() + _EXIT_GRACE_S
                else:
                    chunk = os.read(fd, _CHUNK)
                    if not chunk:
                        sel.unregister(fd)
                        open_streams -= 1
                        continue
                    buf = bufs[fd]
                    room = cap - len(buf)
                    buf += chunk[:room]
                    if len(chunk) > room:
                        overflow = names[fd]
                        break
            if pidfd is None and not exited and proc.poll() is not None:
                exited, grace_end = True, time.monotonic() + _EXIT_GRACE_S
    finally:
        sel.close()
        if pidfd is not None:
            os.close(pidfd)
    return bytes(bufs[out_fd]), bytes(bufs[err_fd]), overflow, timed_out, started


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the child's process group (it leads its own) and the child itself, in case it
    left the group. The leader is not reaped yet, so the ids cannot have been reused."""
    for kill in (os.killpg, os.kill):
        try:
            kill(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _reap(proc: subprocess.Popen) -> float:
    """Wait for the child; return the CPU seconds it and its reaped descendants used."""
    if proc.returncode is not None:
        return 0.0
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def _last_line(text: str, limit: int = 300) -> str:
    for line in reversed(text.splitlines()):
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else line[:limit] + "..."
    return ""


def _judge(rc: int | None, out: bytes, err: bytes, token: bytes, overflow: str, timed_out: bool,
           cpu_s: float, limits: Limits, started: bool = True) -> Result:
    if rc == 1 and _UNSHARE_SIGKILL in err:
        rc, err = -signal.SIGKILL, err.replace(_UNSHARE_SIGKILL + b"\n", b"").replace(_UNSHARE_SIGKILL, b"")
    tail = b"\n" + token + b"\n"
    ok = rc == 0 and not overflow and not timed_out and out.endswith(tail)
    if ok:
        out = out[:-len(tail)]
    stdout, stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    res = Result(Status.FAILED, returncode=rc, stdout=stdout, stderr=stderr, truncated=bool(overflow))
    if ok:
        res.status = Status.PASSED
    elif not started:  # the harness never reached the program: not the program's doing
        res.status = Status.ERROR
        res.reason = "sandbox failed before the program started: " + (
            _last_line(stderr) or ("timed out" if timed_out else f"exit status {rc}"))
    elif overflow:
        res.status, res.reason = Status.OUTPUT_LIMIT, f"{overflow} exceeded {limits.max_output_bytes} bytes"
    elif timed_out:
        res.status, res.reason = Status.TIMEOUT, f"wall-clock limit of {limits.timeout_s:g} s"
    elif rc is not None and rc < 0:
        sig = -rc
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
        # rusage lags the kernel's RLIMIT_CPU check (tick accounting; more on a loaded machine), so a
        # process killed at its CPU limit can report a little less than the limit.
        if sig in (signal.SIGKILL, signal.SIGXCPU) and cpu_s >= 0.8 * limits.cpu_seconds:
            res.status, res.reason = Status.TIMEOUT, f"CPU time limit of {limits.cpu_seconds} s"
        elif "MemoryError" in stderr or "Cannot allocate memory" in stderr:
            res.status, res.reason = Status.MEMORY, f"out of memory (killed by {name})"
        else:
            res.reason = f"killed by {name}"
    elif rc == MEM:
        res.status, res.reason = Status.MEMORY, _last_line(stderr) or "MemoryError"
    elif rc == TAMPER:
        res.reason = "tampering: the harness's success path was triggered outside the end of the tests"
    elif rc == BUILTINS:
        res.reason = _last_line(stderr) or "builtins were modified"
    elif rc == EXIT:
        res.reason = "exited before the tests finished: " + (_last_line(stderr) or "SystemExit")
    elif rc == EXC:
        res.reason = _last_line(stderr) or "exception"
    elif rc == 0:
        res.reason = "exited with status 0 without finishing the tests (no success token)"
    else:
        res.reason = f"exited with status {rc} without finishing the tests"
    return res


def _remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):  # a program may have removed permissions on its own files
        for root, dirs, _ in os.walk(path):
            for d in dirs:
                try:
                    os.chmod(os.path.join(root, d), 0o700)
                except OSError:
                    pass
        try:
            os.chmod(path, 0o700)
        except OSError:
            pass
        shutil.rmtree(path, ignore_errors=True)
