"""A seccomp-BPF filter for the syscalls a sandboxed Python program never needs.

Built here, as classic BPF, so that nothing depends on libseccomp: bubblewrap loads it
(`--seccomp FD`) with no_new_privs set, before it executes the interpreter, and it then holds
for every thread and process of the sandbox. The filter

* kills the process on a foreign syscall ABI (i386 `int 0x80`, x32), where numbers differ;
* answers EPERM to the syscalls in `DENIED`: debugging and reading other processes' memory
  (ptrace, process_vm_readv, pidfd_getfd, kcmp), namespaces and mounts (unshare, setns, mount,
  the new mount API, pivot_root, chroot), memory the address-space limit does not count
  (memfd_create, SysV shared memory, POSIX message queues), io_uring (its operations bypass
  seccomp), kernel attack surface no program needs (bpf, perf_event_open, userfaultfd,
  keyrings, modules, kexec, handles) and host-wide settings (time, swap, reboot, hostname);
* answers EPERM to `clone` with any CLONE_NEW* flag, and ENOSYS to `clone3` (its flags sit in
  memory a filter cannot read; glibc then falls back to `clone`).

Linux x86_64 and aarch64; on other machines `build` returns None and the sandbox says so.
"""
from __future__ import annotations

import errno
import platform
import struct

# name -> (x86_64, aarch64) syscall numbers; None where the architecture has no such call.
SYSCALLS = {
    "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271),
    "pidfd_getfd": (438, 438), "kcmp": (312, 272), "process_madvise": (440, 440),
    "unshare": (272, 97), "setns": (308, 268), "mount": (165, 40), "umount2": (166, 39),
    "pivot_root": (155, 41), "chroot": (161, 51), "open_tree": (428, 428), "move_mount": (429, 429),
    "fsopen": (430, 430), "fsconfig": (431, 431), "fsmount": (432, 432), "fspick": (433, 433),
    "mount_setattr": (442, 442),
    "memfd_create": (319, 279), "memfd_secret": (447, 447), "shmget": (29, 194), "shmat": (30, 196),
    "mq_open": (240, 180),
    "io_uring_setup": (425, 425), "io_uring_enter": (426, 426), "io_uring_register": (427, 427),
    "bpf": (321, 280), "perf_event_open": (298, 241), "userfaultfd": (323, 282),
    "keyctl": (250, 219), "add_key": (248, 217), "request_key": (249, 218),
    "init_module": (175, 105), "finit_module": (313, 273), "delete_module": (176, 106),
    "kexec_load": (246, 104), "kexec_file_load": (320, 294),
    "name_to_handle_at": (303, 264), "open_by_handle_at": (304, 265), "fanotify_init": (300, 262),
    "lookup_dcookie": (212, 18), "quotactl": (179, 60), "quotactl_fd": (443, 443), "acct": (163, 89),
    "swapon": (167, 224), "swapoff": (168, 225), "reboot": (169, 142), "syslog": (103, 116),
    "sethostname": (170, 161), "setdomainname": (171, 162), "vhangup": (153, 58),
    "settimeofday": (164, 170), "clock_settime": (227, 112), "clock_adjtime": (305, 266),
    "adjtimex": (159, 171), "personality": (135, 92),
    "iopl": (172, None), "ioperm": (173, None), "modify_ldt": (154, None), "uselib": (134, None),
}
DENIED = tuple(SYSCALLS)
_CLONE, _CLONE3 = {"x86_64": 56, "aarch64": 220}, {"x86_64": 435, "aarch64": 435}
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_COLUMN = {"x86_64": 0, "aarch64": 1}
CLONE_NEW_FLAGS = 0x7E020000 | 0x00000080  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET, NEWTIME
_X32_BIT = 0x40000000

# classic BPF opcodes
_LD_W_ABS, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_KILL_PROCESS, _ALLOW, _ERRNO = 0x80000000, 0x7FFF0000, 0x00050000


def machine() -> str:
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def build(arch: str | None = None) -> bytes | None:
    """The filter as `struct sock_filter[]` bytes, or None if the architecture is not supported."""
    arch = arch or machine()
    if arch not in _AUDIT_ARCH:
        return None
    col = _COLUMN[arch]
    numbers = sorted({row[col] for row in SYSCALLS.values() if row[col] is not None})
    eperm, enosys = _ERRNO | errno.EPERM, _ERRNO | errno.ENOSYS
    prog = [(_LD_W_ABS, 0, 0, 4),                        # A = seccomp_data.arch
            (_JEQ_K, 1, 0, _AUDIT_ARCH[arch]),
            (_RET_K, 0, 0, _KILL_PROCESS),
            (_LD_W_ABS, 0, 0, 0)]                        # A = seccomp_data.nr
    if arch == "x86_64":
        prog += [(_JGE_K, 0, 1, _X32_BIT), (_RET_K, 0, 0, _KILL_PROCESS)]
    for nr in numbers:
        prog += [(_JEQ_K, 0, 1, nr), (_RET_K, 0, 0, eperm)]
    prog += [(_JEQ_K, 0, 1, _CLONE3[arch]), (_RET_K, 0, 0, enosys),
             (_JEQ_K, 0, 3, _CLONE[arch]),
             (_LD_W_ABS, 0, 0, 16),                      # A = low 32 bits of args[0], the flags
             (_JSET_K, 0, 1, CLONE_NEW_FLAGS), (_RET_K, 0, 0, eperm),
             (_RET_K, 0, 0, _ALLOW)]
    return b"".join(struct.pack("=HBBI", *ins) for ins in prog)


def describe(arch: str | None = None) -> str:
    arch = arch or machine()
    if arch not in _AUDIT_ARCH:
        return f"seccomp: off (no filter for {arch})"
    n = sum(row[_COLUMN[arch]] is not None for row in SYSCALLS.values())
    return f"seccomp: {n} syscalls denied, clone with new namespaces denied, foreign ABIs killed ({arch})"
