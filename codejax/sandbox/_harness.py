"""The sandbox's inside: two processes, a judge that alone runs the tests and a program process.

Started by `codejax.sandbox.runner` as `python -I [-S] -B _harness.pyc` under the kernel
confinement of `namespaces.py`. Stdlib only, and as few imports as it can: start-up is most of
the cost of a test.

Why two processes. The verdict must not be forgeable by the program, and no secret can be kept
from code running in the same interpreter (frames, the object graph, memory, `/proc`). So:

1. The harness reads the program's half of the config from stdin, makes two pipes and forks.
2. The child is the *program process*: it closes the verdict pipe and stdin, installs the audit
   hook and the rlimits, runs `Program.code` in a fresh `__main__`, and then serves requests
   from the judge over the pipes: look up a global, call a function, get an attribute, iterate.
3. The parent is the *judge*: only after the fork does it read the tests' half of the config
   (the tests, `context`, `entry_point`), so the program process never holds them. It runs the
   tests in a namespace of its own: real builtins, the trusted `context` (e.g. HumanEval's
   prompt), and, for each global name the tests use but do not define, the program's object of
   that name as a remote reference. Calls cross the pipes; arguments and results travel as
   plain data (None, bool, int, float, complex, str, bytes, and lists, tuples, dicts, sets of
   those), decoded by a strict parser here, so whatever the program computed arrives as a
   value the judge compares with its own `==`. Anything else comes back as a handle: its
   attributes, calls, iteration, len, indexing, truth, str and repr are forwarded, and handles
   are equal only to themselves. Exceptions come back as the builtin class (or a same-named
   subclass of it), so `except ValueError` in the tests works.
4. The judge writes the verdict to a pipe that only it holds (the program process closed its
   copy before any of its code ran), and the parent believes nothing else.

So no token exists, the program's globals never shadow anything the tests use, patching
builtins or modules in the program process cannot change what the tests compute, and
`__eq__`-always-True objects are not equal to anything. A broken channel (the program died,
a malformed reply) fails the run even if the tests catch the exception.

Exit codes of the judge: 0 verdict written; 116 harness error.
"""
import _thread
import builtins
import marshal
import posix
import sys

HARNESS_ERROR = 116
_SELF = (lambda: None).__code__.co_filename  # this file, also when run from a .pyc
MAX_FRAME = 1 << 28      # 256 MiB: larger replies are a protocol error
MAX_DEPTH = 200          # deeper plain data travels as a handle
PROCESS_EVENTS = frozenset({"os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                            "subprocess.Popen", "pty.spawn", "os.startfile", "os.kill", "os.killpg",
                            "signal.pthread_kill", "signal.pidfd_send_signal", "resource.setrlimit",
                            "resource.prlimit"})
# Imports that would defeat the hook: native-code escape hatches, sub-interpreters (their own
# audit-hook list), and re-creation of modules neutered below.
DENY_IMPORTS = frozenset({
    "_ctypes_test", "_testcapi", "_testinternalcapi", "_testbuffer", "_testmultiphase",
    "_testsinglephase", "_testimportmultiple", "_testclinic", "_xxtestfuzz", "xxlimited", "xxlimited_35",
    "_xxsubinterpreters", "_xxinterpchannels", "_interpreters", "_interpchannels", "_interpqueues",
    "_posixsubprocess", "_remote_debugging",
})
DENY_EVENTS = PROCESS_EVENTS | frozenset({
    "gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys.remote_exec", "cpython.remote_debugger_script",
})
# Only without kernel confinement: the host's files, network and devices are then the hook's job,
# and so are ways into native code (crafted bytecode corrupts memory; asyncio's `types.coroutine`
# needs `code.replace`, so under bubblewrap, where the kernel holds the line, they are allowed).
UNCONFINED_EVENTS = frozenset({
    "code.__new__", "marshal.load",
    "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
    "socket.gethostbyname", "socket.gethostbyname_ex", "socket.gethostbyaddr", "socket.getnameinfo",
    "socket.sethostname", "fcntl.ioctl", "os.symlink", "os.link",
})
DENY_PREFIXES = ("syslog.", "_winapi.", "winreg.")
# ctypes may be imported (pandas does) and may look symbols up, but not call them or touch memory
# by address: that is where native code would start. dlopen is checked like an extension module.
DENY_CTYPES = frozenset({"ctypes.call_function", "ctypes.cdata", "ctypes.string_at", "ctypes.wstring_at",
                         "ctypes.PyObj_FromPtr", "ctypes.dlsym/handle"})
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


class ChannelError(BaseException):
    """The program process died or answered nonsense. BaseException: tests that catch
    Exception around a call must not swallow it (the verdict is FAILED regardless)."""


# --------------------------------------------------------------------------- plain-data codec

def encode(obj, handle, depth=0):
    """`obj` as bytes: plain data by exact type; anything else (or too deep) via `handle(obj)`."""
    t = type(obj)
    if obj is None:
        return b"N"
    if t is bool:
        return b"T" if obj else b"F"
    if t is int:
        return b"i" + format(obj, "x").encode() + b";"
    if t is float:
        return b"f" + repr(obj).encode() + b";"
    if t is str:
        data = obj.encode("utf-8", "surrogatepass")
        return b"s%d:" % len(data) + data
    if t is bytes or t is bytearray:
        return (b"b" if t is bytes else b"a") + b"%d:" % len(obj) + bytes(obj)
    if t is complex:
        return b"c" + repr(obj.real).encode() + b";" + repr(obj.imag).encode() + b";"
    if depth < MAX_DEPTH:
        tag = {list: b"l", tuple: b"t", set: b"S", frozenset: b"Z", dict: b"d"}.get(t)
        if tag is not None:
            if t is dict:
                items = [encode(k, handle, depth + 1) + encode(v, handle, depth + 1) for k, v in obj.items()]
            else:
                items = [encode(x, handle, depth + 1) for x in obj]
            return tag + b"%d:" % len(items) + b"".join(items)
        plain = _as_plain(obj)
        if plain is not _NOT_PLAIN:  # the value, plus a handle for its attributes (namedtuple fields)
            return b"P" + handle(obj) + encode(plain, handle, depth + 1)
    return handle(obj)


_NOT_PLAIN = object()
_PLAIN_BASES = (bool, int, float, complex, str, bytes, bytearray, list, tuple, dict, frozenset, set)


def _as_plain(obj):
    """A subclass of a plain type as that type (a namedtuple as a tuple, an IntEnum as an int;
    what the subclass's `__eq__` would say is not asked), numpy arrays and scalars as `tolist()`.
    Runs in the program process, so what it returns is simply what the program computed."""
    for base in _PLAIN_BASES:
        if isinstance(obj, base):
            try:
                return base(obj) if base is not bool else bool(int(obj))
            except Exception:  # noqa: BLE001
                return _NOT_PLAIN
    if getattr(type(obj), "__module__", "") == "numpy" and hasattr(obj, "tolist"):
        try:
            return obj.tolist()
        except Exception:  # noqa: BLE001
            return _NOT_PLAIN
    return _NOT_PLAIN


class Decoder:
    """Strict parser for `encode`'s format; `ref(tag, id)` turns a handle into an object."""

    def __init__(self, data, ref):
        self.data, self.pos, self.ref = data, 0, ref

    def fail(self, why="malformed"):
        raise ChannelError("protocol error: %s reply" % why)

    def upto(self, stop):
        end = self.data.find(stop, self.pos)
        if end < 0 or end - self.pos > 100_000:
            self.fail()
        text = self.data[self.pos:end]
        self.pos = end + 1
        return text

    def count(self):
        text = self.upto(b":")
        if not text.isdigit():
            self.fail()
        n = int(text)
        if n > len(self.data) - self.pos:
            self.fail("truncated")
        return n

    def take(self, n):
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def number(self, text, kind):
        try:
            return kind(text.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            self.fail()

    def value(self, depth=0):
        if depth > MAX_DEPTH + 1 or self.pos >= len(self.data):
            self.fail()
        tag = self.data[self.pos:self.pos + 1]
        self.pos += 1
        if tag == b"N":
            return None
        if tag == b"T" or tag == b"F":
            return tag == b"T"
        if tag == b"i":
            return self.number(self.upto(b";"), lambda s: int(s, 16))
        if tag == b"f":
            return self.number(self.upto(b";"), float)
        if tag == b"c":
            return complex(self.number(self.upto(b";"), float), self.number(self.upto(b";"), float))
        if tag == b"s":
            try:
                return self.take(self.count()).decode("utf-8", "surrogatepass")
            except UnicodeDecodeError:
                self.fail()
        if tag == b"b":
            return bytes(self.take(self.count()))
        if tag == b"a":
            return bytearray(self.take(self.count()))
        if tag in (b"h", b"r", b"m"):
            return self.ref(tag, self.upto(b";"))
        if tag == b"P":
            remote = self.value(depth + 1)
            plain = self.value(depth + 1)
            return self.ref(b"P", (remote, plain))
        if tag in (b"l", b"t", b"S", b"Z"):
            items = [self.value(depth + 1) for _ in range(self.count())]
            if tag == b"l":
                return items
            if tag == b"t":
                return tuple(items)
            try:
                return set(items) if tag == b"S" else frozenset(items)
            except TypeError:
                self.fail("unhashable")
        if tag == b"d":
            out = {}
            for _ in range(self.count()):
                k = self.value(depth + 1)
                try:
                    out[k] = self.value(depth + 1)
                except TypeError:
                    self.fail("unhashable")
            return out
        self.fail()

    def done(self, value):
        if self.pos != len(self.data):
            self.fail("trailing bytes in a")
        return value


def decode(data, ref):
    d = Decoder(data, ref)
    return d.done(d.value())


def send(fd, tag, payload=b""):
    data = tag + payload
    data = len(data).to_bytes(4, "big") + data
    view = memoryview(data)
    while view:
        view = view[posix.write(fd, view):]


def recv(fd, limit=MAX_FRAME):
    """One frame, or None at end of file."""
    head = read_exact(fd, 4)
    if head is None:
        return None
    n = int.from_bytes(head, "big")
    if n == 0 or n > limit:
        raise ChannelError("protocol error: frame of %d bytes" % n)
    body = read_exact(fd, n)
    if body is None:
        raise ChannelError("protocol error: truncated frame")
    return body


def read_exact(fd, n):
    chunks, got = [], 0
    while got < n:
        b = posix.read(fd, min(n - got, 1 << 20))
        if not b:
            return None  # end of file, before or inside the frame: the caller says which
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def read_config(fd=0):
    data = recv(fd)
    if data is None:
        raise EOFError("no config")
    return marshal.loads(data)


# --------------------------------------------------------------------------- the audit hook

def _make_hook(tmp, read_roots, read_files, confined, sealed):
    """Build the audit hook. Everything it calls is bound here: no global or builtin lookups.
    With `confined` (bubblewrap) the kernel guards files, network and other processes, and the
    hook only blocks process creation and ways into native code; without it, the hook also
    checks every path and blocks sockets."""
    getcwd, lstat, readlink = posix.getcwd, posix.lstat, posix.readlink
    get_ident = _thread.get_ident
    popen, pread, pclose, o_rdonly = posix.open, posix.read, posix.close, posix.O_RDONLY
    last_pyc = {}
    type_, str_, bytes_, int_, issubclass_ = type, str, bytes, int, issubclass
    as_str, decode_ = str.__str__, bytes.decode
    split, startswith, endswith, rfind = str.split, str.startswith, str.endswith, str.rfind
    deny_events, deny_imports, deny_prefixes, deny_ctypes = DENY_EVENTS, DENY_IMPORTS, DENY_PREFIXES, DENY_CTYPES
    unconfined_events, write_events = UNCONFINED_EVENTS, WRITE_EVENTS
    func_attrs = frozenset({"__code__"})
    frame_attrs = frozenset({"gi_frame", "cr_frame", "ag_frame", "gi_suspended"})
    SErr, IErr, OSError_ = SandboxError, SandboxImportError, OSError
    o_write = posix.O_WRONLY | posix.O_RDWR | posix.O_CREAT | posix.O_TRUNC | posix.O_APPEND
    S_IFMT, S_IFLNK, S_IFDIR, S_IFCHR, S_IFBLK = 0o170000, 0o120000, 0o040000, 0o020000, 0o060000
    tmp_slash = tmp + "/"

    def to_str(p):
        t = type_(p)
        if t is str_ or issubclass_(t, str_):
            return as_str(p)  # the real characters, whatever a subclass overrides
        if t is bytes_ or issubclass_(t, bytes_):
            return decode_(p, "utf-8", "surrogateescape")
        return None

    def resolve(p):
        """Absolute, normalised, symlinks followed; (path, st_mode of the target or 0) or None."""
        if not startswith(p, "/"):
            if ".." in split(p, "/"):
                return None
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

    def trusted(r):
        for root in read_roots:
            if r == root or startswith(r, root + "/"):
                return True
        return False

    def check(p, write):
        if type_(p) is int_:
            if not write:
                return None
            raise SErr("sandbox: modifying files through descriptors is not allowed here")
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

    def native_ok(path):
        s = to_str(path)
        res = resolve(s) if s is not None else None
        return res is not None and not inside_tmp(res[0]) and trusted(res[0])

    def hook(event, args):
        if event in deny_events:
            raise SErr("sandbox: %s is not allowed" % event)
        if event == "object.__getattr__":
            if args[1] in frame_attrs:
                for g in sealed:
                    if args[0] is g:
                        raise SErr("sandbox: the harness's frames are not accessible")
            return
        if event == "object.__setattr__" or event == "object.__delattr__":
            if not confined and args[1] in func_attrs:
                raise SErr("sandbox: replacing a function's %s is not allowed" % args[1])
            return
        if event == "import":
            name = to_str(args[0])  # an exact str: a subclass could fake __hash__/__eq__
            if name is None or name in deny_imports:
                raise IErr("sandbox: import of %r is not allowed" % (name,))
            if args[1] is not None and not native_ok(args[1]):  # native code only from the interpreter
                raise IErr("sandbox: loading native code from %r is not allowed" % (args[1],))
            return
        if startswith(event, "ctypes."):
            if event in deny_ctypes:
                raise SErr("sandbox: %s is not allowed" % event)
            if event == "ctypes.dlopen" and args[0] is not None and not native_ok(args[0]):
                raise SErr("sandbox: loading native code from %r is not allowed" % (args[0],))
            return
        for pre in deny_prefixes:
            if startswith(event, pre):
                raise SErr("sandbox: %s is not allowed" % event)
        if confined:
            return
        if event == "open":
            write = args[2] is not None and args[2] & o_write != 0
            r = check(args[0], write)
            if r is not None and not write and endswith(r, ".pyc"):
                if inside_tmp(r):  # crafted bytecode is a way out of the interpreter
                    raise SErr("sandbox: reading bytecode files from the working directory is not allowed")
                last_pyc[get_ident()] = r
        elif event == "marshal.loads":
            if not (type_(args[0]) is bytes_ and same_as_pyc(args[0])):
                raise SErr("sandbox: marshal.loads is only allowed for the interpreter's own bytecode")
        elif event in write_events:
            paths, dfd = write_events[event]
            if dfd >= 0 and args[dfd] is not None and args[dfd] != -1:
                raise SErr("sandbox: %s with dir_fd is not allowed here" % event)
            for i in paths:
                check(args[i], True)
        elif event in unconfined_events:
            raise SErr("sandbox: %s is not allowed" % event)
        elif event == "sqlite3.connect":
            db = to_str(args[0])
            if db is None:
                raise SErr("sandbox: unsupported database path type")
            if db != ":memory:" and db != "":
                check(db, True)

    return hook


def _sealed(fn, check, sealed):
    """`fn(*check(args))` run inside a generator's frame, whose frame attributes the hook refuses:
    unlike a closure or default argument, the original `fn` cannot be fished out."""
    def gen(f=fn, c=check):
        args = yield
        while True:
            try:
                args = yield (True, f(*c(args)))
            except BaseException as e:  # noqa: BLE001 - handed back to the caller
                args = yield (False, e)
    g = gen()
    g.send(None)
    sealed.append(g)
    send_, lock = g.send, _thread.RLock()
    del fn, check, g

    def call(*args):
        with lock:
            ok, value = send_(args)
        if ok:
            return value
        raise value
    return call


def _neuter(loaded, sealed):
    """Replace unaudited C functions that create processes, devices or namespaces; guard the
    re-creation of builtin modules, which would bring the originals back."""
    import _posixsubprocess
    import _imp
    import _signal
    import types

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
    spec_type = type(sys.__spec__)

    def clean_spec(spec, keys, getattr_=getattr, type_=type, str_=str, as_str=str.__str__,
                   issubclass_=issubclass, Namespace=types.SimpleNamespace):
        if type_(spec) is not spec_type:  # exactly a ModuleSpec: no properties of the program's run here
            raise TypeError("spec must be a ModuleSpec")
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

    def dynamic_args(args, clean=clean_spec):  # the audit hook then checks name and origin
        return (clean(args[0], ("name", "origin")),) + tuple(args[1:])

    create = _sealed(_imp.create_builtin, builtin_args, sealed)
    load = _sealed(_imp.create_dynamic, dynamic_args, sealed)

    def create_builtin(spec):
        return create(spec)

    def create_dynamic(spec, file=None):
        return load(spec) if file is None else load(spec, file)
    _imp.create_builtin = create_builtin
    _imp.create_dynamic = create_dynamic


def _set_limits(lim):
    import resource
    for name, value in lim:
        if value is not None:
            resource.setrlimit(getattr(resource, name), (value, value))


# --------------------------------------------------------------------------- the program process

def _exc_info(e):
    """(class name, builtin base name, args if plain else (str,), str) of an exception."""
    t = type(e)
    base = "Exception"
    for c in t.__mro__:
        if builtins.__dict__.get(c.__name__) is c:
            base = c.__name__
            break
    try:
        text = str(e)
    except BaseException:  # noqa: BLE001
        text = "<unprintable>"
    args = e.args if type(e.args) is tuple else ()
    return t.__name__, base, args, text


def _traceback_text(e, sources):
    """A traceback without the harness's frames, with source lines of the program and tests."""
    import traceback
    entries = []
    for fs in traceback.extract_tb(e.__traceback__):
        if fs.filename == _SELF:
            continue
        line = fs.line
        src = sources.get(fs.filename)
        if not line and src and fs.lineno and 0 < fs.lineno <= len(src):
            line = src[fs.lineno - 1].strip()
        entries.append('  File "%s", line %s, in %s' % (fs.filename, fs.lineno, fs.name)
                       + ("\n    " + line if line else ""))
    if len(entries) > 24:
        entries[3:-21] = ["  ... %d more frames ..." % (len(entries) - 23)]
    name, _, _, text = _exc_info(e)
    if isinstance(e, SyntaxError) and e.text:
        entries.append("    " + e.text.strip())
    head = "Traceback (most recent call last):\n" + "\n".join(entries) + "\n" if entries else ""
    return head + name + (": " + text if text else "") + "\n", name + (": " + text if text else "")


class _Server:
    """The program process's side of the channel."""

    def __init__(self, rfd, wfd, g, sources):
        self.rfd, self.wfd, self.g, self.sources = rfd, wfd, g, sources
        self.objects, self.next_id = {}, 1

    def handle(self, obj):
        t = type(obj)
        if t is type(sys):
            return b"m" + obj.__name__.encode("utf-8", "surrogatepass").hex().encode() + b";"
        oid = self.next_id
        self.next_id += 1
        self.objects[oid] = obj
        return b"h" + b"%x;" % oid

    def ref(self, tag, text):
        if tag != b"r":
            raise ChannelError("protocol error: unexpected handle")
        obj = self.objects.get(int(text, 16))
        if obj is None and int(text, 16) not in self.objects:
            raise ChannelError("protocol error: unknown handle")
        return obj

    def reply_value(self, value, extra=b""):
        send(self.wfd, b"V", encode(value, self.handle) + extra)

    def reply_error(self, e):
        name, base, args, text = _exc_info(e)
        try:
            payload = encode((name, base, args, text), self.handle)
        except BaseException:  # noqa: BLE001
            payload = encode((name, base, (text,), text), self.handle)
        send(self.wfd, b"E", payload)

    def serve(self, restore):
        import io
        while True:
            msg = recv(self.rfd)
            if msg is None or msg[:1] == b"X":
                return
            kind, body = msg[:1], msg[1:]
            req = decode(body, self.ref)
            out, err = sys.stdout, sys.stderr
            cap_out, cap_err = io.StringIO(), io.StringIO()
            sys.stdout, sys.stderr = cap_out, cap_err
            try:
                value, mutated = self.run(kind, req)
            except BaseException as e:  # noqa: BLE001 - sent to the judge
                sys.stdout, sys.stderr = out, err
                restore()
                self.reply_error_with_output(e, cap_out, cap_err)
                continue
            sys.stdout, sys.stderr = out, err
            restore()
            self.reply_value((value, mutated, cap_out.getvalue(), cap_err.getvalue()))

    def reply_error_with_output(self, e, cap_out, cap_err):
        name, base, args, text = _exc_info(e)
        try:
            payload = encode((name, base, args, text, cap_out.getvalue(), cap_err.getvalue()), self.handle)
        except BaseException:  # noqa: BLE001
            payload = encode((name, base, (text,), text, "", ""), self.handle)
        send(self.wfd, b"E", payload)

    def run(self, kind, req):
        if kind == b"L":  # look up globals: {name: value or handle} for those the program defines
            return {n: self.g[n] for n in req if type(n) is str and n in self.g}, None
        if kind == b"C":
            fn, args, kwargs = req
            value = fn(*args, **kwargs)
            mutated = [(i, a) for i, a in enumerate(args) if type(a) in (list, dict, set, bytearray)]
            return value, mutated
        if kind == b"A":
            obj, name = req
            return getattr(obj, name), None
        if kind == b"O":
            obj, op, args = req
            return OPS[op](obj, *args), None
        raise ChannelError("protocol error: unknown request")


OPS = {"iter": iter, "next": next, "len": len, "bool": bool, "repr": repr, "str": str, "hash": hash,
       "int": int, "float": float, "index": lambda o: o.__index__(), "getitem": lambda o, k: o[k],
       "contains": lambda o, x: x in o, "setitem": lambda o, k, v: o.__setitem__(k, v),
       "setattr": setattr}


def _program_process(cfg, rfd, wfd):
    """Runs in the forked child: set up, run the program, serve the judge."""
    tmp = cfg["tmp"]
    posix.chdir(tmp)
    data = cfg["stdin"]
    path = tmp + "/.codejax-stdin-%d" % posix.getpid()
    fd = posix.open(path, posix.O_RDWR | posix.O_CREAT | posix.O_EXCL, 0o600)
    posix.unlink(path)  # an anonymous file in the working directory (memfd is denied by seccomp)
    while data:
        data = data[posix.write(fd, data):]
    posix.lseek(fd, 0, 0)
    posix.dup2(fd, 0)
    posix.close(fd)
    _set_limits(cfg["rlimits"])
    roots = tuple(p for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path) if p) + READ_DIRS
    roots = tuple(sorted({_realpath(p) for p in roots + tuple(cfg["read_paths"])}))
    sealed = []
    hook = _make_hook(_realpath(tmp), roots, frozenset(READ_FILES), cfg["confined"], sealed)
    _neuter(tuple(sys.modules), sealed)
    main_mod = type(sys)("__main__")
    sys.modules["__main__"] = main_mod
    sys.argv = ["<program>"]
    program = cfg["program"]
    cfg.clear()
    g = main_mod.__dict__
    g["__builtins__"] = builtins
    server = _Server(rfd, wfd, g, {"<program>": program.splitlines()})
    bdict = builtins.__dict__
    snap = dict(bdict)

    def restore():  # the harness runs on these too; names the program added stay
        for k, v in snap.items():
            if bdict.get(k, restore) is not v:
                bdict[k] = v
    posix.unsetenv("PWD")  # bubblewrap's --chdir sets it; the environment is the parent's choice only
    posix.environ.pop(b"PWD", None)
    sys.addaudithook(hook)
    hook = None
    try:
        code = compile(program, "<program>", "exec", dont_inherit=True, optimize=0)
        exec(code, g)
    except BaseException as e:  # noqa: BLE001 - reported to the judge, which fails the run
        restore()
        _flush()
        text, _ = _traceback_text(e, server.sources)
        if not isinstance(e, SystemExit):
            _write_all(2, text)
        server.reply_error(e)
    else:
        restore()
        _flush()
        send(wfd, b"R")
        server.serve(restore)
    _flush()
    posix._exit(0)


def _flush():
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except BaseException:  # noqa: BLE001
            pass


def _write_all(fd, text):
    data = text.encode("utf-8", "replace")
    while data:
        data = data[posix.write(fd, data):]


# --------------------------------------------------------------------------- the judge

class _Client:
    """The judge's side of the channel: requests to the program process, replies decoded."""

    def __init__(self, rfd, wfd):
        self.rfd, self.wfd = rfd, wfd
        self.broken = None  # the first ChannelError, if any: the run fails whatever the tests do
        self.exc_types = {}

    def ref(self, tag, text):
        if tag == b"h":
            return Remote(self, int(text, 16))
        if tag == b"P":
            remote, plain = text
            base = type(plain)
            if type(remote) is not Remote or base not in _WRAPPABLE:
                return plain
            return _WRAPPABLE[base](plain, remote)
        if tag == b"m":
            try:
                name = bytes.fromhex(text.decode("ascii")).decode("utf-8", "surrogatepass")
                return __import__(name, fromlist=["_"])  # the judge's own copy of the module
            except Exception as e:  # noqa: BLE001
                raise ImportError("the tests use a module the judge cannot import") from e
        self.fail(ChannelError("protocol error: unexpected reference"))

    def fail(self, err):
        if self.broken is None:
            self.broken = err
        raise err

    def arg(self, obj):
        def local(o):
            if type(o) is Remote and o._client is self:
                return b"r%x;" % o._id
            raise TypeError("the tests passed a %s to the program; only plain data (numbers, strings, "
                            "bytes, lists, tuples, dicts, sets) and the program's own objects cross the "
                            "sandbox boundary" % type(o).__name__)
        return encode(obj, local)

    def request(self, kind, payload):
        if self.broken is not None:
            raise self.broken
        _flush()
        try:
            send(self.wfd, kind, payload)
            msg = recv(self.rfd)
        except OSError as e:
            self.fail(ChannelError("the program process is gone (%s)" % e))
        except ChannelError as e:
            self.fail(e)
        if msg is None:
            self.fail(ChannelError("the program process died"))
        try:
            reply = decode(msg[1:], self.ref)
        except ChannelError as e:
            self.fail(e)
        if msg[:1] == b"V" and type(reply) is tuple and len(reply) == 4:
            value, mutated, out, err = reply
            self.echo(out, err)
            return value, mutated
        if msg[:1] == b"E" and type(reply) is tuple and len(reply) == 6:
            self.echo(reply[4], reply[5])
            raise self.exception(*reply[:4])
        self.fail(ChannelError("protocol error: unexpected reply"))

    @staticmethod
    def echo(out, err):
        if type(out) is str and out:
            sys.stdout.write(out)
        if type(err) is str and err:
            sys.stderr.write(err)

    def exception(self, name, base, args, text):
        if type(name) is not str or type(base) is not str or type(args) is not tuple:
            self.fail(ChannelError("protocol error: malformed exception"))
        cls = builtins.__dict__.get(base)
        if not (isinstance(cls, type) and issubclass(cls, BaseException)) or not issubclass(cls, Exception) \
                and cls is not StopIteration:
            cls = RuntimeError  # SystemExit, KeyboardInterrupt, GeneratorExit: must not end the judge
        if name != cls.__name__:
            key = (name, cls)
            if key not in self.exc_types:
                self.exc_types[key] = type(name, (cls,), {"__module__": "<program>"})
            cls = self.exc_types[key]
        try:
            e = cls(*args)
            if str(e) != text and type(text) is str:
                e = cls(text)
        except Exception:  # noqa: BLE001
            e = cls(text)
        return e

    def lookup(self, names):
        value, _ = self.request(b"L", self.arg(sorted(names)))
        if type(value) is not dict:
            self.fail(ChannelError("protocol error: lookup"))
        return value

    def call(self, rid, args, kwargs):
        value, mutated = self.request(b"C", self.arg((Remote(self, rid), args, kwargs)))
        if type(mutated) is list:  # in-place changes to list/dict/set/bytearray arguments
            for item in mutated:
                if type(item) is tuple and len(item) == 2 and type(item[0]) is int and 0 <= item[0] < len(args):
                    mine, new = args[item[0]], item[1]
                    if type(mine) is type(new) and type(mine) in (list, bytearray):
                        mine[:] = new
                    elif type(mine) is type(new) and type(mine) in (dict, set):
                        mine.clear()
                        mine.update(new)
        return value

    def op(self, rid, name, *args):
        return self.request(b"O", self.arg((Remote(self, rid), name, args)))[0]


class Remote:
    """An object that lives in the program process. Equal only to itself."""
    __slots__ = ("_client", "_id")

    def __init__(self, client, rid):
        object.__setattr__(self, "_client", client)
        object.__setattr__(self, "_id", rid)

    def __call__(self, *args, **kwargs):
        return self._client.call(self._id, args, kwargs)

    def __getattr__(self, name):
        return self._client.request(b"A", self._client.arg((self, name)))[0]

    def __setattr__(self, name, value):
        self._client.op(self._id, "setattr", name, value)

    def __iter__(self):
        it = self._client.op(self._id, "iter")
        return it if type(it) is Remote else iter(it)

    def __next__(self):
        return self._client.op(self._id, "next")

    def __len__(self):
        return self._client.op(self._id, "len")

    def __bool__(self):
        return self._client.op(self._id, "bool") is True

    def __repr__(self):
        return str(self._client.op(self._id, "repr"))

    def __str__(self):
        return str(self._client.op(self._id, "str"))

    def __getitem__(self, key):
        return self._client.op(self._id, "getitem", key)

    def __setitem__(self, key, value):
        self._client.op(self._id, "setitem", key, value)

    def __contains__(self, item):
        return self._client.op(self._id, "contains", item) is True

    def __int__(self):
        return int(self._client.op(self._id, "int"))

    def __float__(self):
        return float(self._client.op(self._id, "float"))

    def __index__(self):
        return int(self._client.op(self._id, "index"))

    def __hash__(self):
        return hash(("codejax-remote", self._id))

    def __eq__(self, other):
        return type(other) is Remote and other._client is self._client and other._id == self._id

    def __ne__(self, other):
        return not self.__eq__(other)


def _remote_plain(base):
    """A subclass of `base` for a program value that is a `base` subclass: compares, hashes and
    iterates as the plain value (computed by the judge), attributes come from the program's object."""
    def new(cls, plain, remote):
        self = base.__new__(cls, plain) if base not in (list, dict, set, bytearray) else base.__new__(cls)
        if base in (list, dict, set, bytearray):
            base.__init__(self, plain)
        self.__dict__["_codejax_remote"] = remote
        return self

    def getattr_(self, name):
        return Remote.__getattr__(self.__dict__["_codejax_remote"], name)  # always asks the program
    return type(base.__name__, (base,), {"__new__": new, "__getattr__": getattr_, "__module__": "<program>",
                                        "__init__": lambda self, *a: None})


_WRAPPABLE = {b: _remote_plain(b) for b in (int, float, complex, str, bytes, tuple, list, dict, frozenset, set)}


def _global_names(code):
    """Every name the code objects read as a global or attribute (an over-estimate is harmless)."""
    names, todo = set(), [code]
    while todo:
        c = todo.pop()
        names.update(c.co_names)
        todo.extend(k for k in c.co_consts if type(k) is type(code))
    return names


def _judge(head, rfd, wfd, verdict_fd, child):
    """Runs in the parent after the fork: read the tests, run them against the program process."""
    tests_cfg = read_config(0)
    posix.close(0)
    posix.open("/dev/null", posix.O_RDONLY)  # fd 0 again, for tests that read stdin
    _set_limits(head["judge_rlimits"])
    tests, context, entry = tests_cfg["tests"], tests_cfg["context"], tests_cfg["entry_point"]
    sources = {"<tests>": tests.splitlines(), "<context>": context.splitlines(),
               "<program>": head["program"].splitlines()}
    head.clear()
    client = _Client(rfd, wfd)

    def verdict(status, reason=""):
        _flush()
        _write_all(verdict_fd, "V" + status + "\n" + reason)
        posix._exit(0)

    def program_gone(during):
        """The program process ended: how, from its exit status."""
        try:
            _, status, usage = posix.wait4(child, 0)
        except OSError:
            return verdict("failed", "the program process vanished " + during)
        cpu = usage.ru_utime + usage.ru_stime
        if posix.WIFSIGNALED(status):
            sig = posix.WTERMSIG(status)
            if sig in (9, 24) and cpu >= 0.8 * tests_cfg["cpu_s"]:
                return verdict("timeout", "CPU time limit of %d s" % tests_cfg["cpu_s"])
            return verdict("failed", "the program was killed by signal %d %s" % (sig, during))
        return verdict("failed", "the program exited with status %d %s without finishing the tests"
                       % (posix.WEXITSTATUS(status), during))

    try:
        first = recv(rfd)
    except ChannelError:
        first = None
    if first is None:
        program_gone("while it ran")
    if first[:1] == b"E":
        try:
            name, base, args, text = decode(first[1:], client.ref)
        except (ChannelError, ValueError, TypeError):
            verdict("failed", "the program failed")
        line = str(name) + (": " + str(text) if text else "")
        if base == "SystemExit":
            verdict("failed", "exited before the tests finished: " + line)
        verdict("memory" if base == "MemoryError" else "failed", line)
    if first != b"R":
        verdict("failed", "protocol error: the program process sent an unexpected first message")
    g = {"__name__": "__main__", "__builtins__": builtins}
    try:
        tc = compile(tests, "<tests>", "exec", dont_inherit=True, optimize=0)
        if context:
            exec(compile(context, "<context>", "exec", dont_inherit=True, optimize=0), g)
        wanted = {n for n in _global_names(tc) if n not in g and n not in builtins.__dict__}
        if entry:
            wanted.add(entry)
        for name, value in client.lookup(wanted).items():
            if type(name) is str and (name == entry or name in wanted):
                g[name] = value
        exec(tc, g)
        if client.broken is not None:
            raise client.broken
    except ChannelError as e:
        if "died" in str(e) or "gone" in str(e):
            program_gone("during the tests")
        verdict("failed", str(e))
    except BaseException as e:  # noqa: BLE001 - the tests failed
        if client.broken is not None:
            if "died" in str(client.broken) or "gone" in str(client.broken):
                program_gone("during the tests")
            verdict("failed", str(client.broken))
        text, line = _traceback_text(e, sources)
        _flush()
        _write_all(2, text)
        if isinstance(e, SystemExit):
            verdict("failed", "the tests exited: " + line)
        verdict("memory" if isinstance(e, MemoryError) else "failed", line)
    verdict("passed")


def main():
    try:
        head = read_config(0)
        verdict_fd = head["verdict_fd"]
        j2u_r, j2u_w = posix.pipe()
        u2j_r, u2j_w = posix.pipe()
        child = posix.fork()
    except BaseException as e:  # noqa: BLE001
        _write_all(2, "sandbox harness error: %r\n" % (e,))
        posix._exit(HARNESS_ERROR)
    if child == 0:
        try:
            posix.close(verdict_fd)
            posix.close(j2u_w)
            posix.close(u2j_r)
        except BaseException:  # noqa: BLE001
            posix._exit(HARNESS_ERROR)
        _program_process(head, j2u_r, u2j_w)
        posix._exit(0)
    posix.close(j2u_r)
    posix.close(u2j_w)
    _write_all(verdict_fd, "R")  # the sandbox reached the program: failures from here are its doing
    try:
        _judge(head, u2j_r, j2u_w, verdict_fd, child)
    except BaseException as e:  # noqa: BLE001
        _write_all(2, "sandbox judge error: %r\n" % (e,))
        posix._exit(HARNESS_ERROR)


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
