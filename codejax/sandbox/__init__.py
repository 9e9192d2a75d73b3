"""Run untrusted Python programs (model completions plus unit tests) for pass@k and RL rewards.

    from codejax.sandbox import Program, Limits, run_program, run_programs
    res = run_program(Program(code="def add(a, b):\\n    return a + b", tests="assert add(2, 3) == 5"))
    res.status, res.passed, res.reason, res.stdout, res.stderr, res.wall_s
    results = run_programs(programs, Limits(timeout_s=5, memory_mb=512), workers=8)  # in input order

Linux only. Threat model: the program is written by an adversary who has read this source (a
policy optimised against the reward finds what works). The tests, `context` and `read_paths`
come from the benchmark or dataset and are trusted.

Enforced by the kernel (with bubblewrap; `isolation().describe()` says which layers are active,
and without bubblewrap the sandbox claims only what it has):
- a mount namespace with a read-only view of the interpreter, the system libraries, zoneinfo and
  `read_paths` only (site-packages with `site_packages=True`); a private size-capped tmpfs as
  working directory, HOME and /tmp; a private /dev/shm; no /proc, no host /tmp or /home;
- no network (a network namespace with only its own loopback); pid, ipc, uts, cgroup namespaces:
  no view of host processes, everything left behind dies with the program;
- uid/gid 65534 in a user namespace without capabilities, no_new_privs, no nested user namespaces;
- a seccomp filter (`seccomp.py`): ptrace and reading other processes' memory, mounts and
  namespaces, memfd and SysV shared memory (memory RLIMIT_AS would not count), io_uring, bpf,
  perf, keyrings, modules, time; foreign syscall ABIs kill the process;
- rlimits: CPU, address space, file size, open files, core, and processes (non-root callers);
- the verdict (`_harness.py`): a judge process runs the tests; the program process serves its
  objects over pipes; values cross as plain data the judge compares itself; only the judge holds
  the verdict pipe. No token exists, so there is none to steal.

Best effort (the audit hook in the program process, defence in depth): process creation and
signals, calling native code through ctypes, loading native code from the working directory,
sub-interpreters; without bubblewrap also every path, socket and crafted bytecode (then the
only guard for files and, without namespaces, for the network: not a security boundary).
Memory: RLIMIT_AS per process plus the tmpfs caps (`Limits.disk_mb`, `shm_mb`); no cgroup is
used, so page cache and kernel memory are not counted.

Not defended:
- tests that trust what the program controls: its helper functions or classes called by name,
  files it wrote that the tests read, handles (non-plain values) whose methods it implements;
  and programs that special-case the test inputs;
- root callers: RLIMIT_NPROC does not apply to uid 0 outside the namespace, so a fork bomb is
  stopped only by the audit hook; CPython or kernel memory-corruption bugs; CPU contention and
  timing side channels; the failure kind (FAILED/TIMEOUT/MEMORY) is steerable, PASSED is not.

Hostile workloads at scale: run the evaluation as an unprivileged user in a container (bubblewrap
needs `--security-opt seccomp=unconfined` or a profile allowing `unshare` and `mount`, or the
host's user namespaces), one container per worker host, and treat each host as a pool of sandbox
workers (`run_programs(workers=cores)`); for a shared cluster put the containers in gVisor or
Firecracker VMs so a kernel bug does not reach the host.
"""
from codejax.sandbox.namespaces import Isolation, detect
from codejax.sandbox.program import Limits, Program, Result, Status
from codejax.sandbox.runner import run_program, run_programs


def isolation(python: str | None = None) -> Isolation:
    """The kernel isolation the sandbox uses on this machine (probed once, cached)."""
    import sys
    return detect(python or sys.executable)


__all__ = ["Isolation", "Limits", "Program", "Result", "Status", "isolation", "run_program", "run_programs"]
