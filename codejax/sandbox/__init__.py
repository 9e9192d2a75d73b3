"""Run untrusted Python programs (model completions plus unit tests) for pass@k and RL rewards.

    from codejax.sandbox import Program, Limits, run_program, run_programs
    res = run_program(Program(code="def add(a, b):\\n    return a + b", tests="assert add(2, 3) == 5"))
    res.status, res.passed, res.reason, res.stdout, res.stderr, res.wall_s
    results = run_programs(programs, Limits(timeout_s=5, memory_mb=512), workers=8)  # in input order

Linux only. One process per program, layered:

1. Kernel namespaces where the OS allows (`namespaces.detect`, probed once): user, network
   (nothing reaches any network, 127.0.0.1 included), pid (the program cannot see or signal
   host processes; its leftovers die with it), ipc, uts.
2. Resource limits: wall clock (the parent kills the process group), RLIMIT_CPU, RLIMIT_AS,
   RLIMIT_FSIZE, RLIMIT_NOFILE, RLIMIT_CORE=0, and RLIMIT_NPROC inside a user namespace.
3. A fresh temporary working directory (also HOME and TMPDIR), deleted afterwards; an
   environment of PATH, LANG, HOME, TMPDIR and thread-count variables only; stdin is
   `Program.stdin`; stdout and stderr captured incrementally, killed past a size cap.
4. In the child, before any untrusted code: an audit hook (`sys.addaudithook`) that blocks
   fork/exec/spawn/subprocess, kill/killpg, sockets (connect/bind/send, DNS), ctypes,
   sub-interpreters, gc/frame introspection (`gc.get_objects`, `sys._getframe`,
   `sys._current_frames`, `tb_frame`/`gi_frame`), settrace/setprofile, adding audit hooks,
   rlimit changes, symlinks/hard links, hand-made code objects and `marshal.loads` of anything
   but the interpreter's own .pyc files (crafted bytecode corrupts memory), native code
   (extension modules) from anywhere but the interpreter's directories, writes outside the
   working directory and reads outside it, the interpreter's library directories and
   `read_paths`. Unaudited C functions with the same reach (`_posixsubprocess.fork_exec`,
   `os.mknod`, `signal.pidfd_send_signal`, ...) are replaced; handlers installed with
   `signal.signal` receive `None` instead of a frame.
5. The pass criterion (`_harness.py` explains it): the parent's random per-run token is printed
   only by a harness thread whose frame no user code can reach, and only after it has checked
   that the main thread's genuine call stack has returned from running the tests.
   `exit()`, `sys.exit`, `raise SystemExit`, `os._exit(0)`, killing things, replacing
   `print`/`sys.stdout`/builtins, fake token lines and atexit handlers all fail. Builtins
   are compared with a snapshot after the program and after the tests.

What it does NOT defend against:
- Semantic hacks: objects whose `__eq__` always returns True, monkeypatching modules the tests
  use (`math.isclose`, `sys.modules[...]`), reading the expected values the tests keep in the
  shared namespace (`check.__code__.co_consts`) or special-casing the test inputs. The sandbox
  checks that the tests ran to the end, not that they test anything.
- The audit hook is not a security boundary in CPython's own terms: a memory-corruption bug in
  the interpreter or a C extension (site-packages with `site_packages=True`) bypasses it. The
  kernel layers (namespaces, rlimits) still hold then; as root (uid 0) the program would keep
  root's file access, and RLIMIT_NPROC does not apply to root. For hostile workloads run the
  whole evaluation as an unprivileged user inside a container or VM (gVisor, Firecracker).
- Host resource exhaustion beyond the limits: many files under the size limit filling the
  disk, CPU contention between parallel programs, page-cache pressure.
- Timing and other side channels; the program can see the host's file names (listing
  directories is allowed) and the interpreter's files.
- The failure kinds (FAILED, TIMEOUT, MEMORY, OUTPUT_LIMIT) are diagnostics a hostile program
  can steer, e.g. by exiting with the harness's MemoryError code. PASSED cannot be faked, and
  neither can ERROR, which means the sandbox failed before the program started.
"""
from codejax.sandbox.namespaces import Isolation, detect
from codejax.sandbox.program import Limits, Program, Result, Status
from codejax.sandbox.runner import run_program, run_programs


def isolation(python: str | None = None) -> Isolation:
    """The kernel isolation the sandbox uses on this machine (probed once, cached)."""
    import sys
    return detect(python or sys.executable)


__all__ = ["Isolation", "Limits", "Program", "Result", "Status", "isolation", "run_program", "run_programs"]
