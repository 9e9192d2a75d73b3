"""The parent side: start the sandbox per program, feed it, watch it, believe only its judge.

Each program gets the confinement of `namespaces.detect` (with bubblewrap: fresh namespaces
and a private tmpfs working directory, so nothing is left on the host; otherwise a fresh host
temporary directory, removed afterwards by `remove_tree`, which never raises), a scrubbed
environment and a process group of its own (killed as a whole). The parent writes the
program's half of the config, then the tests' half, to the child's stdin (`_harness.py` reads
the second only in the judge, after the fork), reads stdout/stderr incrementally with a
selector, keeping at most `max_output_bytes` of each, and reads the verdict pipe, whose write
end only the judge keeps. Past the output cap or the wall-clock deadline it SIGKILLs the
process group. `run_programs` drives many of these from a thread pool: the threads only
wait on pipes, the work happens in the children.
"""
from __future__ import annotations

import atexit
import concurrent.futures
import marshal
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from typing import Iterable, Sequence

from codejax.sandbox import namespaces as iso_mod
from codejax.sandbox import seccomp
from codejax.sandbox.program import Limits, Program, Result, Status

HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_harness.py")
HARNESS_ERROR = 116  # as in _harness.py
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
    """Run one program with its tests in the sandbox and judge it. Never raises for anything
    the program does: sandbox failures are `Status.ERROR` results.

    python: the interpreter (default: this one). It runs with `-I -S -B`: isolated from the
        environment and user site, no site-packages (`site_packages=True` drops `-S` and
        binds site-packages into the view, e.g. for numpy), no .pyc writes.
    read_paths: extra files/directories the program may read (bound read-only at the same path).
    namespaces: False skips the kernel confinement (the audit hook and rlimits remain).
    tmp_root: where the per-program working directories are made when there is no private
        tmpfs (no bubblewrap; default: $TMPDIR).
    """
    limits = limits or Limits()
    python = python or sys.executable
    start = time.monotonic()
    try:
        isolation = iso_mod.detect(python) if namespaces else iso_mod.NO_NAMESPACES
    except Exception as e:  # noqa: BLE001 - e.g. not Linux
        return Result(Status.ERROR, f"sandbox unavailable: {e}", name=program.name)
    tmp = None
    if not isolation.confined:
        try:
            tmp = os.path.realpath(tempfile.mkdtemp(prefix="codejax-sandbox-", dir=tmp_root))
        except OSError as e:
            return Result(Status.ERROR, f"cannot create a working directory: {e}", name=program.name)
    try:
        return _execute(program, limits, python, site_packages, tuple(read_paths), isolation, tmp, start)
    except Exception as e:  # noqa: BLE001 - a sandbox failure, reported as such
        return Result(Status.ERROR, f"sandbox error: {type(e).__name__}: {e}", wall_s=time.monotonic() - start,
                      name=program.name)
    finally:
        if tmp is not None:
            remove_tree(tmp)


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


def _execute(program: Program, limits: Limits, python: str, site_packages: bool, read_paths: tuple[str, ...],
             isolation: iso_mod.Isolation, tmp: str | None, start: float) -> Result:
    mb = 1 << 20
    rlimits = (("RLIMIT_AS", limits.memory_mb * mb), ("RLIMIT_CPU", limits.cpu_seconds),
               ("RLIMIT_FSIZE", limits.file_size_mb * mb), ("RLIMIT_CORE", 0),
               ("RLIMIT_NOFILE", limits.max_open_files),
               # Without a user namespace RLIMIT_NPROC would count all of the host user's processes.
               ("RLIMIT_NPROC", limits.max_processes if isolation.user_namespace else None))
    judge_rlimits = rlimits[:5]
    workdir = iso_mod.WORKDIR if isolation.confined else tmp
    verdict_r, verdict_w = os.pipe()
    filt = seccomp.build() if isolation.seccomp else None
    filt_r = None
    fds = [verdict_w]
    if filt is not None:
        filt_r, filt_w = os.pipe()
        os.write(filt_w, filt)  # a few hundred bytes: fits the pipe buffer
        os.close(filt_w)
        fds.append(filt_r)
    head = marshal.dumps({"verdict_fd": verdict_w, "program": program.code, "tmp": workdir,
                          "stdin": program.stdin.encode("utf-8", "surrogateescape"), "confined": isolation.confined,
                          "read_paths": tuple(os.path.realpath(p) for p in read_paths), "rlimits": rlimits,
                          "judge_rlimits": judge_rlimits})
    tail = marshal.dumps({"tests": program.tests, "context": program.context, "entry_point": program.entry_point,
                          "cpu_s": limits.cpu_seconds})
    payload = b"".join(len(x).to_bytes(4, "big") + x for x in (head, tail))
    argv = isolation.argv(python, _compiled_harness(python), site_packages=site_packages, read_paths=read_paths,
                          disk_mb=limits.disk_mb, shm_mb=limits.shm_mb, seccomp_fd=filt_r)
    try:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    cwd=tmp or "/", env=iso_mod.base_env(workdir), pass_fds=tuple(fds), **_OWN_GROUP)
        finally:
            for fd in fds:
                os.close(fd)
    except OSError as e:
        os.close(verdict_r)
        return Result(Status.ERROR, f"cannot start the sandbox: {e}", wall_s=time.monotonic() - start,
                      name=program.name)
    try:
        out, err, verdict, overflow, timed_out = _communicate(proc, payload, limits.max_output_bytes,
                                                              start + limits.timeout_s, verdict_r)
    finally:
        os.close(verdict_r)
        _kill_group(proc)
        cpu_s = _reap(proc)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None and not f.closed:
                try:
                    f.close()
                except OSError:
                    pass
    wall = time.monotonic() - start
    res = _judge(proc.returncode, out, err, verdict, overflow, timed_out, cpu_s, limits)
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


def _communicate(proc: subprocess.Popen, payload: bytes, cap: int, deadline: float, verdict_fd: int):
    """Write the payload, read both streams up to `cap` bytes each and the verdict pipe, stop at
    exit/overflow/deadline."""
    out_fd, err_fd, in_fd = proc.stdout.fileno(), proc.stderr.fileno(), proc.stdin.fileno()
    bufs = {out_fd: bytearray(), err_fd: bytearray()}
    names = {out_fd: "stdout", err_fd: "stderr"}
    verdict = bytearray()
    pending = memoryview(payload)
    overflow, timed_out, exited, grace_end = "", False, False, None
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
        sel.register(verdict_fd, selectors.EVENT_READ)
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
                elif fd == verdict_fd:
                    chunk = os.read(verdict_fd, _CHUNK)
                    if not chunk or len(verdict) > 1 << 20:
                        sel.unregister(verdict_fd)
                    verdict += chunk
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
    try:  # the judge writes the verdict before it exits: take what is there
        while len(verdict) < 1 << 20:
            os.set_blocking(verdict_fd, False)
            chunk = os.read(verdict_fd, _CHUNK)
            if not chunk:
                break
            verdict += chunk
    except OSError:
        pass
    return bytes(bufs[out_fd]), bytes(bufs[err_fd]), bytes(verdict), overflow, timed_out


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


def _judge(rc: int | None, out: bytes, err: bytes, verdict: bytes, overflow: str, timed_out: bool,
           cpu_s: float, limits: Limits) -> Result:
    """The result, from the judge's verdict ("R" when it reached the program, then "V<status>\\n<reason>")
    and what the parent saw itself (output cap, deadline, exit status)."""
    if rc == 1 and _UNSHARE_SIGKILL in err:
        rc, err = -signal.SIGKILL, err.replace(_UNSHARE_SIGKILL + b"\n", b"").replace(_UNSHARE_SIGKILL, b"")
    started = verdict.startswith(b"R")
    status, _, reason = verdict[2:].decode("utf-8", "replace").partition("\n") if verdict[1:2] == b"V" else ("", "", "")
    stdout, stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    res = Result(Status.FAILED, returncode=rc, stdout=stdout, stderr=stderr, truncated=bool(overflow))
    if overflow:
        res.status, res.reason = Status.OUTPUT_LIMIT, f"{overflow} exceeded {limits.max_output_bytes} bytes"
    elif timed_out:
        res.status, res.reason = Status.TIMEOUT, f"wall-clock limit of {limits.timeout_s:g} s"
    elif status == "passed" and rc == 0:
        res.status = Status.PASSED
    elif status in ("failed", "memory", "timeout"):
        res.status = {"failed": Status.FAILED, "memory": Status.MEMORY, "timeout": Status.TIMEOUT}[status]
        res.reason = reason or status
    elif not started:  # the harness never reached the program: not the program's doing
        res.status = Status.ERROR
        res.reason = "sandbox failed before the program started: " + (
            _last_line(stderr) or f"exit status {rc}")
    elif rc is not None and rc < 0:
        sig = -rc
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
        # rusage lags the kernel's RLIMIT_CPU check (tick accounting), so a process killed at its
        # CPU limit can report a little less than the limit.
        if sig in (signal.SIGKILL, signal.SIGXCPU) and cpu_s >= 0.8 * limits.cpu_seconds:
            res.status, res.reason = Status.TIMEOUT, f"CPU time limit of {limits.cpu_seconds} s"
        else:
            res.reason = f"the judge was killed by {name} (by the program?)"
    else:
        res.reason = f"the judge ended with status {rc} without a verdict (killed by the program?)"
    return res


def remove_tree(path: str, budget_s: float = 30.0) -> bool:
    """Delete `path` whatever a program left in it: unreadable or unwritable directories, deep
    or wide trees, files held open, fifos, odd names. Never raises; gives up after `budget_s`
    seconds. Returns whether the path is gone. Works on file descriptors relative to each
    directory (no path-length limit, no symlink following)."""
    deadline = time.monotonic() + budget_s
    try:
        _remove_entry(None, path, deadline)
    except Exception:  # noqa: BLE001 - never into the caller
        pass
    return not os.path.lexists(path)


def _remove_entry(dir_fd: int | None, name: str, deadline: float, depth: int = 0) -> None:
    """Remove `name` (relative to `dir_fd`), iteratively for wide dirs and recursively to a bounded
    depth; deeper levels are moved up before they are removed."""
    if time.monotonic() > deadline:
        return
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except OSError:
        return
    if not stat.S_ISDIR(st.st_mode):
        try:
            os.unlink(name, dir_fd=dir_fd)
        except OSError:
            pass
        return
    try:
        os.chmod(name, 0o700, dir_fd=dir_fd)
    except (OSError, NotImplementedError):
        pass
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError:
        return
    try:
        while time.monotonic() <= deadline:
            with os.scandir(fd) as it:
                batch = [e.name for _, e in zip(range(4096), it)]
            if not batch:
                break
            for child in batch:
                if depth < 64:
                    _remove_entry(fd, child, deadline, depth + 1)
                else:  # very deep: lift the subtree up a level at a time instead of recursing
                    _flatten(fd, child, dir_fd, name)
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=dir_fd)
    except OSError:
        pass


def _flatten(fd: int, child: str, parent_fd: int | None, name: str) -> None:
    """Move `child`'s entries into this directory's parent level so recursion depth stays bounded."""
    try:
        sub = os.open(child, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
    except OSError:
        try:
            os.unlink(child, dir_fd=fd)
        except OSError:
            pass
        return
    try:
        os.chmod(sub, 0o700)
        for e in list(os.scandir(sub)):
            try:
                os.rename(e.name, f".cjx{os.urandom(8).hex()}", src_dir_fd=sub, dst_dir_fd=fd)
            except OSError:
                pass
    finally:
        os.close(sub)
    try:
        os.rmdir(child, dir_fd=fd)
    except OSError:
        pass
