"""What goes into the sandbox and what comes out: `Program`, `Limits`, `Result`, `Status`."""
from __future__ import annotations

import dataclasses
import enum
import math


@dataclasses.dataclass(frozen=True)
class Program:
    """One untrusted program and the tests that judge it.

    `code` runs first, then `tests`, in the same fresh `__main__` namespace. They are compiled
    separately, so an unclosed string or a stray `#` in `code` cannot swallow the tests. A
    program passes when both run to the end without an exception; empty `tests` therefore
    pass any program that runs. `stdin` is what `input()` / `sys.stdin` read.
    """

    code: str
    tests: str = ""
    name: str = ""
    stdin: str = ""

    @classmethod
    def from_humaneval(cls, problem: dict, completion: str) -> "Program":
        """HumanEval layout: prompt + completion, then `test` and `check(entry_point)`."""
        return cls(code=problem["prompt"] + completion,
                   tests=problem["test"] + f"\n\ncheck({problem['entry_point']})\n",
                   name=problem.get("task_id", ""))


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-program resource limits.

    timeout_s: wall clock, enforced by the parent (kills the process group).
    cpu_s: RLIMIT_CPU in whole seconds (default: ceil(timeout_s)).
    memory_mb: RLIMIT_AS, the address space (virtual memory), not resident memory.
    file_size_mb: RLIMIT_FSIZE, the largest file the program may write.
    max_output_bytes: per stream (stdout, stderr); past it the program is killed.
    max_open_files: RLIMIT_NOFILE.
    max_processes: RLIMIT_NPROC, set only inside a user namespace. The kernel does not apply it
        to root (uid 0 outside the namespace), so there the audit hook is the only fork block.
    """

    timeout_s: float = 10.0
    cpu_s: float | None = None
    memory_mb: int = 1024
    file_size_mb: int = 64
    max_output_bytes: int = 1 << 20
    max_open_files: int = 256
    max_processes: int = 64

    def __post_init__(self):
        if self.timeout_s <= 0 or self.memory_mb <= 0 or self.max_output_bytes <= 0:
            raise ValueError(f"limits must be positive: {self}")

    @property
    def cpu_seconds(self) -> int:
        return max(1, math.ceil(self.cpu_s if self.cpu_s is not None else self.timeout_s))


class Status(str, enum.Enum):
    """Outcome of one program. PASSED cannot be faked, and neither can ERROR (the harness signals
    on a pipe, closed before untrusted code runs, that it reached the program). The failure kinds
    in between are diagnostics a hostile program can steer (`os._exit(113)` looks like MEMORY)."""

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
