"""What goes into the sandbox and what comes out: `Program`, `Limits`, `Result`, `Status`."""
from __future__ import annotations

import dataclasses
import enum
import math


@dataclasses.dataclass(frozen=True)
class Program:
    """One untrusted program and the tests that judge it.

    `code` runs in a fresh `__main__` of the program process. `tests` run in a separate judge
    process, in a namespace of their own (`_harness.py` explains the protocol): they see the
    real builtins, what they import and define, the trusted `context` (run there first), and,
    for each global name they use but do not define (and `entry_point`), the program's object
    of that name. Values cross as plain data; other objects as handles equal only to
    themselves. A program passes when it runs to the end and the tests then do too; empty
    `tests` therefore pass any program that runs. `stdin` is what `input()` / `sys.stdin` read.

    context: trusted code the tests may use, e.g. HumanEval's prompt, whose helpers (`poly` in
        HumanEval/32) the tests call: the judge runs its own copy, so the program cannot
        redefine them. Names it defines are not taken from the program, except `entry_point`.
    entry_point: the function under test; always taken from the program.
    """

    code: str
    tests: str = ""
    name: str = ""
    stdin: str = ""
    context: str = ""
    entry_point: str = ""

    @classmethod
    def from_humaneval(cls, problem: dict, completion: str) -> "Program":
        """HumanEval layout: prompt + completion, then `test` and `check(entry_point)`."""
        return cls(code=problem["prompt"] + completion,
                   tests=problem["test"] + f"\n\ncheck({problem['entry_point']})\n",
                   name=problem.get("task_id", ""), context=problem["prompt"],
                   entry_point=problem["entry_point"])


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-program resource limits.

    timeout_s: wall clock, enforced by the parent (kills the process group).
    cpu_s: RLIMIT_CPU in whole seconds (default: ceil(timeout_s)).
    memory_mb: RLIMIT_AS, the address space (virtual memory), not resident memory.
    file_size_mb: RLIMIT_FSIZE, the largest file the program may write.
    max_output_bytes: per stream (stdout, stderr); past it the program is killed.
    max_open_files: RLIMIT_NOFILE.
    max_processes: RLIMIT_NPROC, set only inside a user namespace: processes and threads of
        the program, the harness's two included. The kernel does not apply it to root (uid 0
        outside the namespace), so there the audit hook is the only fork block (best effort).
    disk_mb: the size of the private tmpfs working directory (bubblewrap only).
    shm_mb: the size of the private /dev/shm (bubblewrap only).

    Threads: up to max_processes - 2, each taking 8 MiB of the address space from memory_mb.
    Recursion: `sys.setrecursionlimit` is the program's to raise; Python-to-Python calls use no C
    stack, so depths of 100,000 work within memory_mb.
    """

    timeout_s: float = 10.0
    cpu_s: float | None = None
    memory_mb: int = 1024
    file_size_mb: int = 64
    max_output_bytes: int = 1 << 20
    max_open_files: int = 256
    max_processes: int = 64
    disk_mb: int = 256
    shm_mb: int = 64

    def __post_init__(self):
        if min(self.timeout_s, self.memory_mb, self.max_output_bytes, self.disk_mb, self.shm_mb) <= 0:
            raise ValueError(f"limits must be positive: {self}")

    @property
    def cpu_seconds(self) -> int:
        return max(1, math.ceil(self.cpu_s if self.cpu_s is not None else self.timeout_s))


class Status(str, enum.Enum):
    """Outcome of one program. PASSED comes only from the judge process, which alone holds the
    verdict pipe; ERROR means the sandbox failed before the program started (the judge signals
    on that pipe when it reaches the program). The failure kinds in between are diagnostics a
    hostile program can steer (raising MemoryError looks like MEMORY)."""

    PASSED = "passed"
    FAILED = "failed"              # an exception, a failed assert, an early exit, a crash, tampering
    TIMEOUT = "timeout"            # wall-clock or CPU-time limit
    MEMORY = "memory"              # MemoryError under RLIMIT_AS
    OUTPUT_LIMIT = "output_limit"  # stdout or stderr over Limits.max_output_bytes
    ERROR = "error"                # the sandbox failed before the program started; never the program's doing

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass
class Result:
    status: Status
    reason: str = ""
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False   # stdout or stderr hit the cap
    wall_s: float = 0.0
    name: str = ""

    @property
    def passed(self) -> bool:
        return self.status is Status.PASSED
