"""The child side of the sandbox: runs ONE untrusted program and its tests in this process.

Started by `codejax.sandbox.runner` as `python -I [-S] -B _harness.py` inside the kernel
namespaces, with a marshal'd config on stdin and cwd = a fresh temporary directory. Stdlib
only, and it imports as little as it can (start-up time is most of the cost of a test).

The pass protocol. The parent puts a random token in the config. Only a "vault" thread ever
holds it, as a local of a frame no user code can reach (`sys._current_frames` and the `gc`
introspection functions are blocked). The main thread runs the program, then the tests, with
two plain `exec` calls in `_run`; if both return, `_run` calls `_finish`, which releases the
vault's lock. The vault then checks the main thread's real call stack: `_finish` called by
`_run` called by `main` called by this module, bottom frame first, compared by code-object
identity. Only then does it write the token to a dup of the original stdout and `_exit(0)`.
Anything else that wakes the vault (user code found the lock somehow) ends the process with
the tamper code. So the token appears only if the genuine `_run` frame got past both execs,
which an exception, SystemExit, `os._exit`, a signal, or patching builtins cannot fake.
Nothing on the main thread's stack holds the token, so a leaked frame does not leak it.

Then the audit hook (installed before any user code) blocks what would break that or the
host: process creation, signals to other processes, sockets, frame and object-graph
introspection, `ctypes`, sub-interpreters, writes outside the temp dir, reads outside the
stdlib / temp dir / an allow-list, rlimit changes. The hook never calls anything user code
could patch: every callable it uses is bound into its closure when it is built.

Exit codes: 0 only from the vault; 111 exception; 112 SystemExit; 113 MemoryError;
114 tamper; 115 builtins modified; 116 harness error. Any program can fake these (`os._exit`),
except one thing: the harness writes a byte to the `ready_fd` pipe and closes it just before
the first line of untrusted code runs, so the parent knows whether a failure can be the
program's doing at all.
"""
import _imp
import _thread
import builtins
import marshal
import posix
import sys

EXC, EXIT, MEM, TAMPER, BUILTINS, HARNESS = 111, 112, 113, 114, 115, 116
_SELF = (lambda: None).__code__.co_filename  # this file, also when run from a .pyc

# Imports that would defeat the hook: C-level escape hatches, sub-interpreters (their own
# audit-hook list), unaudited C file I/O, and re-creation of modules we neuter below.
DENY_IMPORTS = frozenset({
    "_ctypes", "_ctypes_test", "_testcapi", "_testinternalcapi", "_testbuffer", "_testmultiphase",
    "_testsinglephase", "_testimportmultiple", "_testclinic", "_xxtestfuzz", "xxlimited", "xxlimited_35",
    "_xxsubinterpreters", "_xxinterpchannels", "_interpreters", "_interpchannels", "_interpqueues",
    "_posixsubprocess", "_dbm", "_gdbm", "readline", "_tkinter", "_ssl", "nis", "_remote_debugging",
})
DENY_EVENTS = frozenset({
    "os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen",
    "pty.spawn", "os.startfile", "webbrowser.open",
    "os.kill", "os.killpg", "signal.pthread_kill", "signal.pidfd_send_signal",
    "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
    "socket.gethostbyname", "socket.gethostbyname_ex", "socket.gethostbyaddr", "socket.getnameinfo",
    "socket.sethostname",
    "gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys._current_frames",
    "sys._current_exceptions", "sys.settrace", "sys.setprofile", "sys.addaudithook",
    "sys.monitoring.register_callback", "sys.remote_exec", "cpython.remote_debugger_script",
    "resource.setrlimit", "resource.prlimit", "fcntl.ioctl", "os.symlink", "os.link",
    "code.__new__", "marshal.load",  # hand-made code objects: crafted bytecode corrupts memory
})
DENY_PREFIXES = ("ctypes.", "syslog.", "_winapi.", "winreg.")
FRAME_ATTRS = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame"})
# event -> (positions of path arguments, position of dir_fd or -1); all of these modify the file system
WRITE_EVENTS = {
    "os.mkdir": ((0,), 2), "os.rmdir": ((0,), 1), "os.remove": ((0,), 1), "os.rename": ((0, 1), 2),
    "os.truncate": ((0,), -1), "os.chmod": ((0,), 2), "os.chown": ((0,), 3), "os.utime": ((0,), 3),
    "os.setxattr": ((0,), -1), "os.removexattr": ((0,), -1), "os.chflags": ((0,), -1),
    "os.lchflags": ((0,), -1),
}
READ_FILES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/etc/localtime")
READ_DIRS = ("/usr/share/zoneinfo",)


class SandboxError(PermissionError):
    """An operation the sandbox forbids."""


class SandboxImportError(ImportError):
    """An import the sandbox forbids."""


class SandboxFrameError(RuntimeError):
    """Frame access is disabled (RuntimeError, which `traceback.clear_frames` tolerates)."""


class SandboxGetframeError(ValueError):
    """`sys._getframe` is disabled (ValueError, which namedtuple/enum/typing/logging tolerate)."""


def _fail(fd, text, code, _write=posix.write, _exit=posix._exit):
    try:
        data = text.encode("utf-8", "replace")
        while data:
            data = data[_write(fd, data):]
    finally:
        _exit(code)


def _vault(line, out_fd, trigger, main_id, codes, current_frames, write, exit_, tamper):
    """Holds the token. Wakes once; writes it only if the main thread is in the genuine `_finish`."""
    trigger.acquire()
    keep = None  # frames stay referenced until _exit: nothing user-owned is freed in this thread
    ok = False
    try:
        keep = current_frames()
        f = keep.get(main_id)
        fin, run, mainc, modc = codes
        if f is not None and f.f_code is fin:
            r = f.f_back
            if r is not None and r.f_code is run:
                m = r.f_back
                if m is not None and m.f_code is mainc:
                    b = m.f_back
                    ok = b is not None and b.f_code is modc and b.f_back is None
    except BaseException:
        ok = False
    if ok:
        try:
            while line:
                line = line[write(out_fd, line):]
        except BaseException:
            exit_(tamper)
        exit_(0)
    exit_(tamper)


def _make_hook(vault_id, tmp, read_roots, read_files, phase, budget):
    """Build the audit hook. Everything it calls is bound here: no global or builtin lookups."""
    get_ident = _thread.get_ident
    getcwd, lstat, readlink = posix.getcwd, posix.lstat, posix.readlink
    type_, str_, bytes_, int_, issubclass_ = type, str, bytes, int, issubclass
    as_str, decode = str.__str__, bytes.decode
    split, startswith, endswith, rfind = str.split, str.startswith, str.endswith, str.rfind
    popen, pread, pclose, o_rdonly = posix.open, posix.read, posix.close, posix.O_RDONLY
    last_pyc = {}
    deny_events, deny_imports, deny_prefixes, frame_attrs = DENY_EVENTS, DENY_IMPORTS, DENY_PREFIXES, FRAME_ATTRS
    write_events = WRITE_EVENTS
    func_attrs = frozenset({"__code__"})
    SErr, IErr, FErr, GErr, OSError_ = SandboxError, SandboxImportError, SandboxFrameError, SandboxGetframeError, OSError
    o_write = posix.O_WRONLY | posix.O_RDWR | posix.O_CREAT | posix.O_TRUNC | posix.O_APPEND
    S_IFMT, S_IFLNK, S_IFDIR, S_IFCHR, S_IFBLK = 0o170000, 0o120000, 0o040000, 0o020000, 0o060000
    tmp_slash = tmp + "/"

    def to_str(p):
        t = type_(p)
        if t is str_ or issubclass_(t, str_):
            return as_str(p)  # the real characters, whatever a subclass overrides
        if t is bytes_ or issubclass_(t, bytes_):
            return decode(p, "utf-8", "surrogateescape")  # bytes.decode reads the real bytes
        return None

    def resolve(p):
        """Absolute, normalised, symlinks followed; (path, st_mode of the target or 0) or None."""
        if not startswith(p, "/"):
            if ".." in split(p, "/"):
                return None  # a relative '..' could be taken from an unknown dir_fd
            p = getcwd() + "/" + p
        todo = split(p, "/")
        todo.reverse()
        out, hops, mode = "", 0, 0
        while todo:
            c = todo.pop()
            if c == "" or c == ".":
                continue
            if c == "..":
                out = out[:rfind(out, "/")]
                continue
            cand = out + "/" + c
            try:
                mode = lstat(cand).st_mode
            except OSError_:
                mode = 0
                out = cand
                continue
            if mode & S_IFMT == S_IFLNK:
                hops += 1
                if hops > 40:
                    return None
                target = readlink(cand)
                if startswith(target, "/"):
                    out = ""
                parts = split(target, "/")
                parts.reverse()
                todo += parts
                mode = 0
                continue
            out = cand
        return (out or "/"), mode

    def inside_tmp(r):
        return r == tmp or startswith(r, tmp_slash)

    def check(p, write):
        """Raise unless the program may open `p` this way; return the resolved path."""
        if type_(p) is int_:
            if not write:
                return None
            try:
                p = readlink("/proc/self/fd/%d" % p)
            except OSError_:
                raise SErr("sandbox: cannot modify file descriptor %d" % p) from None
        s = to_str(p)
        if s is None:
            raise SErr("sandbox: unsupported path type")
        res = resolve(s)
        if res is None:
            raise SErr("sandbox: path not allowed: %r" % s)
        r, mode = res
        kind = mode & S_IFMT
        if inside_tmp(r):
            if kind == S_IFCHR or kind == S_IFBLK:
                raise SErr("sandbox: device files are not allowed: %r" % s)
            if not write and endswith(r, ".pyc"):  # crafted bytecode is a way out of the interpreter
                raise SErr("sandbox: reading bytecode files from the working directory is not allowed")
            return r
        if r == "/dev/null":
            return r
        if write:
            raise SErr("sandbox: writes are only allowed in the working directory: %r" % s)
        if kind == S_IFDIR:
            raise SErr("sandbox: opening directories outside the working directory is not allowed: %r" % s)
        if r in read_files or trusted(r):
            return r
        raise SErr("sandbox: reading %r is not allowed" % s)

    def trusted(r):
        for root in read_roots:
            if r == root or startswith(r, root + "/"):
                return True
        return False

    def same_as_pyc(data):
        """marshal.loads is allowed only for the body of the .pyc this thread opened last from a
        trusted directory: what the import system does. Anything else could be crafted bytecode."""
        path = last_pyc.pop(get_ident(), None)
        if path is None:
            return False
        chunks = []
        fd = popen(path, o_rdonly)
        try:
            while True:
                b = pread(fd, 1 << 20)
                if not b:
                    break
                chunks.append(b)
        finally:
            pclose(fd)
        return b"".join(chunks)[16:] == data

    def hook(event, args):
        if get_ident() == vault_id:  # the vault: one frame snapshot and f_code reads, nothing else
            if event == "sys._current_frames" and budget:
                budget.pop()
                return
            if event == "object.__getattr__" and args[1] == "f_code":
                return
            raise SErr("sandbox: not allowed in the harness thread")
        if event == "open":
            write = args[2] is not None and args[2] & o_write != 0
            r = check(args[0], write)
            if r is not None and not write and endswith(r, ".pyc"):
                last_pyc[get_ident()] = r
        elif event == "marshal.loads":
            if not (type_(args[0]) is bytes_ and same_as_pyc(args[0])):
                raise SErr("sandbox: marshal.loads is only allowed for the interpreter's own bytecode")
        elif event in write_events:
            paths, dfd = write_events[event]
            if dfd >= 0 and args[dfd] is not None and args[dfd] != -1:
                raise SErr("sandbox: %s with dir_fd is not allowed" % event)
            for i in paths:
                check(args[i], True)
        elif event == "object.__getattr__":
            if args[1] in frame_attrs and not phase:
                raise FErr("sandbox: frame objects are not accessible (%s)" % args[1])
        elif event == "object.__setattr__" or event == "object.__delattr__":
            if args[1] in func_attrs:
                raise SErr("sandbox: replacing a function's %s is not allowed" % args[1])
        elif event == "import":
            name = to_str(args[0])  # an exact str: a subclass could fake __hash__/__eq__
            if name is None or name in deny_imports:
                raise IErr("sandbox: import of %r is not allowed" % (name,))
            if args[1] is not None:  # an extension module: native code, so only from trusted directories
                s = to_str(args[1])
                res = resolve(s) if s is not None else None
                if res is None or inside_tmp(res[0]) or not trusted(res[0]):
                    raise IErr("sandbox: loading native code from %r is not allowed" % (args[1],))
        elif event == "sys._getframe" or event == "sys._getframemodulename":
            raise GErr("sandbox: sys._getframe is disabled")
        elif event in deny_events:
            raise SErr("sandbox: %s is not allowed" % event)
        elif event == "sqlite3.connect":
            db = to_str(args[0])
            if db is None:
                raise SErr("sandbox: unsupported database path type")
            if db != ":memory:" and db != "":
                check(db, True)
        else:
            for pre in deny_prefixes:
                if startswith(event, pre):
                    raise SErr("sandbox: %s is not allowed" % event)

    return hook


def _sealed(fn, check):
    """`fn(*check(args))` run inside a generator's frame, which user code cannot open (gi_frame is
    blocked): unlike a closure or default argument, the original `fn` cannot be fished out."""
    def gen(f=fn, c=check):
        args = yield
        while True:
            try:
                args = yield (True, f(*c(args)))
            except BaseException as e:  # noqa: BLE001 - handed back to the caller
                args = yield (False, e)
    g = gen()
    g.send(None)
    send, lock = g.send, _thread.RLock()
    del fn, check, g

    def call(*args):
        with lock:
            ok, value = send(args)
        if ok:
            return value
        raise value
    return call


def _neuter(loaded):
    """Replace unaudited dangerous C functions; the originals become unreachable."""
    import _posixsubprocess
    import _signal

    def blocked(name):
        def f(*args, **kwargs):
            raise SandboxError("sandbox: %s is not allowed" % name)
        f.__name__ = f.__qualname__ = name
        return f

    _posixsubprocess.fork_exec = blocked("fork_exec")  # subprocess's fork+exec, not audited
    for name in ("mknod", "mkfifo", "pidfd_open", "chroot", "setns", "unshare", "setsid", "setpgid", "setpgrp"):
        if hasattr(posix, name):
            setattr(posix, name, blocked(name))
    for name in ("pidfd_send_signal", "pthread_kill", "sigqueue"):
        if hasattr(_signal, name):
            setattr(_signal, name, blocked(name))

    # Python-level signal handlers receive the interrupted frame: they get None instead.
    def wrap_handler(args, type_=type, issubclass_=issubclass, int_=int, add=int.__add__, callable_=callable):
        num, h = args
        if issubclass_(type_(h), int_):
            return (num, add(h, 0))  # SIG_DFL / SIG_IGN as a plain int: no callable int subclasses
        if not callable_(h):
            return args

        def handler(signum, frame, _user=h):  # noqa: ARG001 - the frame is withheld
            return _user(signum, None)
        return (num, handler)

    raw = _sealed(_signal.signal, wrap_handler)

    def signal(signalnum, handler):
        return raw(signalnum, handler)
    signal.__doc__ = _signal.signal.__doc__
    _signal.signal = signal

    # A fresh copy of a builtin module would bring the originals back. The real functions get
    # a clean copy of the spec (SimpleNamespace: its type cannot be patched), so that a `name`
    # or `origin` property cannot answer one thing to the check and another to the loader.
    # (Importing `types` here, before the hook, also matters: it reads a tb_frame on import.)
    import types

    def clean_spec(spec, keys, getattr_=getattr, type_=type, issubclass_=issubclass, str_=str,
                   as_str=str.__str__, Namespace=types.SimpleNamespace):
        values = {}
        for key in keys:
            v = getattr_(spec, key)
            if not issubclass_(type_(v), str_):
                raise TypeError("spec.%s must be a str" % key)
            values[key] = as_str(v)
        return Namespace(**values)

    def builtin_args(args, clean=clean_spec,
                     deny=frozenset(loaded) | {"_signal", "posix", "_imp", "sys", "builtins", "_thread"}):
        (spec,) = args
        spec = clean(spec, ("name",))
        if spec.name in deny:
            raise SandboxImportError("sandbox: re-creating builtin module %r is not allowed" % spec.name)
        spec.origin = "built-in"
        return (spec,)

    def dynamic_args(args, clean=clean_spec):  # the audit hook then checks origin (native code)
        return (clean(args[0], ("name", "origin")),) + tuple(args[1:])

    create = _sealed(_imp.create_builtin, builtin_args)
    load = _sealed(_imp.create_dynamic, dynamic_args)

    def create_builtin(spec):
        return create(spec)

    def create_dynamic(spec, file=None):
        return load(spec) if file is None else load(spec, file)
    _imp.create_builtin = create_builtin
    _imp.create_dynamic = create_dynamic


def _read_all(fd):
    chunks = []
    while True:
        b = posix.read(fd, 1 << 16)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def _set_limits(lim):
    import resource
    for name, value in lim:
        if value is not None:
            resource.setrlimit(getattr(resource, name), (value, value))


def _format(exc, program, tests, limit=24):
    """A traceback without the harness's frames, with source lines of the program and tests.
    (The `traceback` module would cost ~10 ms of imports on every failing program.)"""
    sources = {"<program>": program.splitlines(), "<tests>": tests.splitlines()}
    entries, tb = [], exc.__traceback__
    while tb is not None:
        code, lineno = tb.tb_frame.f_code, tb.tb_lineno
        if code.co_filename != _SELF:
            entry = '  File "%s", line %s, in %s' % (code.co_filename, lineno, code.co_name)
            src = sources.get(code.co_filename)
            if src and lineno and 0 < lineno <= len(src):
                entry += "\n    " + src[lineno - 1].strip()
            entries.append(entry)
        tb = tb.tb_next
    if len(entries) > limit:
        entries[3:-(limit - 3)] = ["  ... %d more frames ..." % (len(entries) - limit + 1)]
    try:
        msg = str(exc)
    except BaseException:  # noqa: BLE001
        msg = "<unprintable>"
    if isinstance(exc, SyntaxError) and exc.text:
        entries.append("    " + exc.text.strip())
    head = "Traceback (most recent call last):\n" + "\n".join(entries) + "\n" if entries else ""
    return head + type(exc).__name__ + (": " + msg if msg else "") + "\n"


def _finish(release, park):
    release()
    park()


def _run(program, tests, phase, release, park, err_fd, out_obj, err_obj, builtins, main_mod,
         exec_=exec, compile_=compile, BaseException_=BaseException, SystemExit_=SystemExit,
         MemoryError_=MemoryError, dict_=dict):
    g = main_mod.__dict__
    g["__builtins__"] = builtins
    bdict = builtins.__dict__
    snap = dict_(bdict)

    def report(exc, code, note=""):
        phase.append(1)  # frame attributes readable again, for the traceback
        for s in (out_obj, err_obj):
            try:
                s.flush()
            except BaseException_:
                pass
        try:
            text = _format(exc, program, tests)
        except BaseException_:
            text = "(unprintable exception)\n"
        _fail(err_fd, note + text, code)

    def tampered():
        if g.get("__builtins__") is not builtins:
            return True
        for k, v in snap.items():
            if bdict.get(k, report) is not v:
                return True
        return False

    try:
        pc = compile_(program, "<program>", "exec", dont_inherit=True, optimize=0)
        tc = compile_(tests, "<tests>", "exec", dont_inherit=True, optimize=0)
    except BaseException_ as e:
        report(e, EXC)
    try:
        exec_(pc, g)
        if tampered():
            report(RuntimeError("the program modified builtins"), BUILTINS)
        exec_(tc, g)
        if tampered():
            report(RuntimeError("builtins were modified while the tests ran"), BUILTINS)
    except SystemExit_ as e:
        report(e, EXIT, "the program exited before the tests finished\n")
    except MemoryError_ as e:
        report(e, MEM)
    except BaseException_ as e:
        report(e, EXC)
    for s in (out_obj, err_obj):
        try:
            s.flush()
        except BaseException_:
            pass
    _finish(release, park)


def main():
    err_fd = posix.dup(2)
    try:
        cfg = marshal.loads(_read_all(0))
        tmp = cfg["tmp"]
        posix.chdir(tmp)
        fd = posix.memfd_create("stdin", 0) if hasattr(posix, "memfd_create") else posix.open("/dev/null", 0)
        data = cfg["stdin"]
        while data:
            data = data[posix.write(fd, data):]
        posix.lseek(fd, 0, 0)
        posix.dup2(fd, 0)
        posix.close(fd)
        _set_limits(cfg["rlimits"][:-1])  # RLIMIT_NPROC last: after our own thread exists
        out_fd = posix.dup(1)
        trigger, park = _thread.allocate_lock(), _thread.allocate_lock()
        trigger.acquire()
        park.acquire()
        here = sys._getframe()
        codes = (_finish.__code__, _run.__code__, here.f_code, here.f_back.f_code)
        here = None
        old = _thread.stack_size(1 << 18)
        vault_id = _thread.start_new_thread(
            _vault, (b"\n" + cfg.pop("token") + b"\n", out_fd, trigger, _thread.get_ident(), codes,
                     sys._current_frames, posix.write, posix._exit, TAMPER))
        _thread.stack_size(old)
        _set_limits(cfg["rlimits"][-1:])
        roots = tuple(p for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path) if p) + READ_DIRS
        roots = tuple(sorted({_realpath(p) for p in roots + tuple(cfg["read_paths"])}))
        phase, budget = [], [1]
        hook = _make_hook(vault_id, _realpath(tmp), roots, frozenset(READ_FILES), phase, budget)
        loaded = tuple(sys.modules)
        _neuter(loaded)
        main_mod = type(sys)("__main__")
        sys.modules["__main__"] = main_mod
        sys.argv = ["<program>"]
        program, tests, cfg_ready = cfg.pop("program"), cfg.pop("tests"), cfg.pop("ready_fd")
        cfg = None
        sys.addaudithook(hook)
        hook = None
        ready = cfg_ready
        posix.write(ready, b"1")  # tells the parent that what follows is the program's doing
        posix.close(ready)
    except BaseException as e:  # noqa: BLE001
        _fail(err_fd, "sandbox harness error: %r\n" % (e,), HARNESS)
    _run(program, tests, phase, trigger.release, park.acquire, err_fd, sys.stdout, sys.stderr,
         builtins, main_mod)


def _realpath(p):
    """Before the hook exists: symlinks followed, normalised (posixpath would import os)."""
    parts, out, hops = p.split("/")[::-1], "", 0
    if not p.startswith("/"):
        parts += posix.getcwd().split("/")[::-1]
    while parts:
        c = parts.pop()
        if c in ("", "."):
            continue
        if c == "..":
            out = out[:out.rfind("/")]
            continue
        cand = out + "/" + c
        try:
            st = posix.lstat(cand)
        except OSError:
            out = cand
            continue
        if st.st_mode & 0o170000 == 0o120000 and hops < 40:
            hops += 1
            t = posix.readlink(cand)
            if t.startswith("/"):
                out = ""
            parts += t.split("/")[::-1]
            continue
        out = cand
    return out or "/"


if __name__ == "__main__":
    main()
