"""Attacks on the verdict and the host, one class per section of the issue that hardened the
sandbox (#14), run as ONE batch next to correct programs. Every attack must come out "not
passed" and the host unharmed: no file outside the sandbox, no process left, no /dev/shm entry,
this process alive, and the correct programs of the same batch still passing."""
import glob
import os
import sys
import tempfile
import textwrap

import pytest

from codejax.sandbox import Limits, Program, Status, isolation, run_programs
from codejax.sandbox.runner import remove_tree

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox is Linux-only")
ISO = isolation() if sys.platform.startswith("linux") else None
MARK = "cjx" + os.urandom(4).hex()           # names every file/shm entry/process an attack tries to leave
OUT = os.path.join(tempfile.gettempdir(), MARK)  # a host path attacks try to write
TESTS = "assert f(2) == 4, 'wrong answer'"     # f must double; every attack's f is wrong or missing
WRONG = "def f(x):\n    return 0\n"

ATTACKS = {
    # --- user code reaching harness state: wrappers' globals, frames, the failure path
    "wrapper-globals": WRONG + "import _posixsubprocess as p\ng = p.fork_exec.__globals__\n"
                               "g['_judge'] = g['_Server'] = None\ng['send'](3, b'R')",
    "replace-verdict-writer": WRONG + "import _imp\ng = _imp.create_builtin.__globals__\n"
                                      "g['_write_all'](5, 'Vpassed\\n')\ng['_write_all'](3, 'Vpassed\\n')",
    "fake-verdict-on-every-fd": WRONG + "import os\nfor fd in range(3, 64):\n    try:\n"
                                        "        os.write(fd, b'RVpassed\\n')\n    except OSError:\n        pass",
    "exception-str-runs-code": "class E(Exception):\n    def __str__(self):\n        import sys\n"
                               "        f = sys._getframe()\n        while f:\n            f.f_globals.pop('_judge', None)\n"
                               "            f = f.f_back\n        return 'x'\ndef f(x):\n    raise E()",
    "traceback-frames": WRONG + "import sys\ntry:\n    1/0\nexcept ZeroDivisionError:\n    fr = sys.exc_info()[2].tb_frame\n"
                                "while fr:\n    fr.f_globals['verdict'] = None\n    fr = fr.f_back",
    "thread-rewrites-replies": "import threading, os, time\ndef spam():\n    while True:\n"
                               "        try:\n            os.write(4, (9).to_bytes(4, 'big') + b'VT' + b'x' * 7)\n"
                               "        except OSError:\n            pass\n        time.sleep(0.001)\n"
                               "threading.Thread(target=spam, daemon=True).start()\ndef f(x):\n    time.sleep(0.05)\n    return 0",
    "malformed-reply": "import os\ndef f(x):\n    os.write(4, (5).to_bytes(4, 'big') + b'Vl9:N')\n    os._exit(0)",
    "reply-claims-pass": "import os\ndef f(x):\n    data = b'Vt4:i4;l0:s0:s0:'\n"
                         "    os.write(4, len(data).to_bytes(4, 'big') + data)\n    import time; time.sleep(5)",
    "kill-judge": WRONG + "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
    "stop-judge": WRONG + "import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)",
    "sealed-generator-frame": WRONG + "import gc\nprint(gc.get_referents(__import__('_imp').create_builtin))",
    "huge-reply": "def f(x):\n    return 'x' * (300 << 20)",
    "deep-reply": "def f(x):\n    v = []\n    for _ in range(100000):\n        v = [v]\n    return v",
    # --- the tests see the program's globals / patched builtins / modules
    "shadow-abs": "abs = lambda x: 0\ndef f(x):\n    return 0",
    "shadow-helper-in-context": "def poly(*a):\n    return 0\ndef f(x):\n    return 0",
    "patch-math": "import math\nmath.isclose = lambda *a, **k: True\ndef f(x):\n    return 0",
    "patch-sys-modules": "import sys, types\nm = types.ModuleType('math')\nm.isclose = lambda *a, **k: True\n"
                         "sys.modules['math'] = m\ndef f(x):\n    return 0",
    "patch-assertionerror": "import builtins\nbuiltins.AssertionError = type('X', (Exception,), {})\ndef f(x):\n    return 0",
    "always-equal": "class A:\n    def __eq__(self, o):\n        return True\n    __hash__ = object.__hash__\n"
                    "def f(x):\n    return A()",
    "always-equal-int-subclass": "class I(int):\n    def __eq__(self, o):\n        return True\n    __hash__ = int.__hash__\n"
                                 "def f(x):\n    return I(0)",
    "read-expected-constants": "import gc\ndef f(x):\n    for o in gc.get_objects():\n        pass\n    return 0",
    "exit-zero-in-call": "import os\ndef f(x):\n    os._exit(0)",
    "systemexit-in-call": "def f(x):\n    raise SystemExit(0)",
    "baseexception-in-call": "def f(x):\n    raise KeyboardInterrupt",
    "exit-before-tests": "def f(x):\n    return x * 2\nimport sys\nsys.exit(0)",
    # --- path checks that trust strings; library routes with no audit event
    "write-host-tmp": WRONG + f"open({OUT!r}, 'w').write('x')",
    "chdir-race-relative": WRONG + "import os, threading\nos.makedirs('d', exist_ok=True)\n"
                                   "t = threading.Thread(target=lambda: [os.chdir('/') or os.chdir('/tmp') for _ in range(2000)])\n"
                                   f"t.start()\nfor _ in range(200):\n    try:\n        open({os.path.relpath(OUT, '/')!r}, 'w')\n"
                                   "    except OSError:\n        pass\nt.join()",
    "dir-fd-escape": WRONG + f"import os\nfd = os.open({os.path.dirname(OUT)!r}, os.O_RDONLY)\n"
                             f"os.close(os.open({MARK!r}, os.O_CREAT | os.O_WRONLY, dir_fd=fd))",
    "memfd-native-code": WRONG + "import os\nfd = os.memfd_create('/usr/lib/libc.so.6')\n"
                                 "os.write(fd, b'\\x7fELF')\nimport _imp",
    "proc-self-mem": WRONG + "open('/proc/self/mem', 'rb').read(1)",
    "proc-judge-mem": WRONG + "import os\nopen('/proc/%d/mem' % os.getppid(), 'rb').read(1)",
    "sqlite-attach": WRONG + f"import sqlite3\nc = sqlite3.connect(':memory:')\nc.execute(\"ATTACH DATABASE '{OUT}' AS x\")\n"
                             "c.execute('create table x.t (a)')",
    "sqlite-vacuum-into": WRONG + f"import sqlite3\nc = sqlite3.connect(':memory:')\nc.execute('create table t (a)')\n"
                                  f"c.execute(\"VACUUM INTO '{OUT}'\")",
    "sqlite-uri": WRONG + f"import sqlite3\nsqlite3.connect('file:{OUT}?mode=rwc', uri=True).execute('create table t (a)')",
    "posix-shm": WRONG + f"from multiprocessing import shared_memory\nshared_memory.SharedMemory('{MARK}', create=True, size=4096)",
    "named-semaphore": WRONG + f"import _multiprocessing\n_multiprocessing.SemLock(1, 1, 1, '/{MARK}', False)",
    "shm-file-fill": WRONG + "open('/dev/shm/big', 'wb').write(b'x' * (200 << 20))",
    "memfd-memory": WRONG + "import os\nfd = os.memfd_create('m')\nfor _ in range(4096):\n    os.write(fd, b'x' * (1 << 20))",
    "sysv-shm": WRONG + "import ctypes\nctypes.CDLL(None).shmget(0, 1 << 30, 0o1000 | 0o600)",
    # --- processes and the kernel
    "fork-bomb": WRONG + "import os\nwhile True:\n    os.fork()",
    "spawn-sleeper": WRONG + f"import subprocess\nsubprocess.Popen(['sleep', '{MARK}'])",
    "ptrace-judge": WRONG + "import ctypes, os\nctypes.CDLL(None).ptrace(16, os.getppid(), 0, 0)",
    "unshare-userns": WRONG + "import os\nos.unshare(os.CLONE_NEWUSER)",
    "network": WRONG + "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=1)",
    # --- clean-up that can be crashed
    "cleanup-deep-tree": "import os\np = '.'\nfor i in range(400):\n    p = os.path.join(p, 'd')\n    os.mkdir(p)\n"
                         "os.chmod('d', 0)\n" + WRONG,
    "cleanup-unreadable": "import os\nos.makedirs('a/b/c')\nopen('a/b/c/f', 'w').write('x')\nos.chmod('a/b', 0)\nos.chmod('a', 0o100)\n"
                          + WRONG,
    "cleanup-open-fifo": "import os\nos.mkfifo('fifo')\n" + WRONG,
}
CORRECT = {
    "double": "def f(x):\n    return x * 2",
    "double-numpy-free-threads": "import threading\nout = []\nts = [threading.Thread(target=out.append, args=(i,)) for i in range(20)]\n"
                                 "[t.start() for t in ts]\n[t.join() for t in ts]\ndef f(x):\n    return x * 2",
}


def _host_state():
    shm = sorted(p for p in glob.glob("/dev/shm/*") if MARK in p)
    procs = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    if MARK.encode() in fh.read():
                        procs.append(pid)
            except OSError:
                pass
    tmp = sorted(p for p in glob.glob(os.path.join(tempfile.gettempdir(), "*")) if MARK in p)
    return shm, procs, tmp


@pytest.fixture(scope="module")
def batch():
    programs = [Program(textwrap.dedent(code), TESTS, name=name) for name, code in ATTACKS.items()]
    programs += [Program(code, TESTS, name=name) for name, code in CORRECT.items()]
    programs.append(Program("def poly(*a):\n    return 0\ndef f(x):\n    return 0",
                            "assert poly(1) == 1\nassert f(2) == 4", name="context-helper",
                            context="def poly(x):\n    return x\n", entry_point="f"))
    results = run_programs(programs, Limits(timeout_s=8, cpu_s=5, memory_mb=512, shm_mb=64, disk_mb=64), workers=2)
    return {r.name: r for r in results}


def test_at_least_forty_attacks():
    assert len(ATTACKS) >= 40


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_does_not_pass(batch, name):
    res = batch[name]
    assert not res.passed, res
    assert res.status is not Status.ERROR, res


def test_context_helpers_come_from_the_trusted_context(batch):
    assert not batch["context-helper"].passed  # poly from the context is right, f is wrong
    assert "assert f(2) == 4" in batch["context-helper"].stderr


def test_correct_programs_in_the_same_batch_pass(batch):
    for name in CORRECT:
        assert batch[name].passed, batch[name]


def test_host_is_unharmed(batch):
    shm, procs, tmp = _host_state()
    assert (shm, procs, tmp) == ([], [], []), "the batch left something on the host"
    assert not os.path.exists(OUT)
    assert os.getpid() > 0 and "PATH" in os.environ


# ---------------------------------------------------------------- robust clean-up (no bubblewrap)

def test_remove_tree_never_raises_and_leaves_nothing(tmp_path):
    root = tmp_path / "w"
    p = root
    for _ in range(300):  # deep
        p = p / "d"
    p.mkdir(parents=True)
    (root / "wide").mkdir()
    for i in range(3000):  # wide
        (root / "wide" / f"f{i}").write_text("x")
    (root / "locked" / "inner").mkdir(parents=True)
    (root / "locked" / "inner" / "f").write_text("x")
    os.chmod(root / "locked" / "inner", 0)
    os.chmod(root / "locked", 0o100)
    os.mkfifo(root / "fifo")
    os.symlink("/etc", root / "link")  # never followed
    held = open(root / "held", "w")
    try:
        assert remove_tree(str(root)) is True
    finally:
        held.close()
    assert not root.exists() and os.path.exists("/etc")
    assert remove_tree(str(tmp_path / "missing")) is True


@pytest.mark.parametrize("code", [ATTACKS["cleanup-deep-tree"], ATTACKS["cleanup-unreadable"],
                                  ATTACKS["cleanup-open-fifo"]], ids=["deep", "unreadable", "fifo"])
def test_clean_up_without_namespaces(code, tmp_path):
    from codejax.sandbox import run_program
    res = run_program(Program(code, TESTS), Limits(timeout_s=10), namespaces=False, tmp_root=str(tmp_path))
    assert not res.passed and res.status is Status.FAILED, res
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- no over-blocking

OK_PROGRAMS = {
    "asyncio": ("import asyncio\nasync def g(x):\n    await asyncio.sleep(0)\n    return 2 * x\n"
                "def f(x):\n    return asyncio.run(g(x))", False),
    "traceback": ("import traceback\ndef f(x):\n    try:\n        1 / 0\n    except ZeroDivisionError:\n"
                  "        assert 'ZeroDivisionError' in traceback.format_exc()\n    return 2 * x", False),
    "doctest-main": ("def f(x):\n    '''\n    >>> f(2)\n    4\n    '''\n    return 2 * x\n"
                     "if __name__ == '__main__':\n    import doctest\n    assert doctest.testmod().failed == 0", False),
    "unittest": ("import unittest\ndef f(x):\n    return 2 * x\nclass T(unittest.TestCase):\n"
                 "    def test(self):\n        self.assertEqual(f(2), 4)\n"
                 "r = unittest.TextTestRunner(verbosity=0).run(unittest.defaultTestLoader.loadTestsFromTestCase(T))\n"
                 "assert r.wasSuccessful()", False),
    "threads-60": ("import threading\nout = []\nts = [threading.Thread(target=out.append, args=(i,)) for i in range(60)]\n"
                   "[t.start() for t in ts]\n[t.join() for t in ts]\nassert len(out) == 60\ndef f(x):\n    return 2 * x", False),
    "rmtree-own-dirs": ("import os, shutil\nos.makedirs('a/b/c')\nopen('a/b/c/x', 'w').write('1')\nshutil.rmtree('a')\n"
                        "assert not os.path.exists('a')\ndef f(x):\n    return 2 * x", False),
    "recursion-100k": ("import sys\nsys.setrecursionlimit(200_000)\ndef d(n):\n    return 0 if n == 0 else 1 + d(n - 1)\n"
                       "assert d(100_000) == 100_000\ndef f(x):\n    return 2 * x", False),
    "generator-result": ("def f(x):\n    return iter([2 * x])", False),
    "numpy": ("import numpy as np\ndef f(x):\n    return np.int64(2 * x)", True),
    "pandas": ("import pandas as pd\ndef f(x):\n    return int(pd.Series([x, x]).sum())", True),
    "networkx": ("import networkx as nx\ndef f(x):\n    g = nx.path_graph(2 * x + 1)\n    return nx.shortest_path_length(g, 0, 2 * x)",
                 True),
}


@pytest.mark.parametrize("name", list(OK_PROGRAMS))
def test_correct_programs_are_not_over_blocked(name):
    code, site = OK_PROGRAMS[name]
    if site:
        pytest.importorskip(name)
    tests = "r = f(2)\nassert (next(r) if hasattr(r, '__next__') else r) == 4"
    res = run_programs([Program(code, tests)], Limits(timeout_s=30, memory_mb=2048), workers=1,
                       site_packages=site)[0]
    assert res.passed, res


# ---------------------------------------------------------------- each kernel layer on its own

needs_bwrap = pytest.mark.skipif(ISO is None or not ISO.confined, reason="no bubblewrap confinement here")


def _raw(code):
    from codejax.sandbox import namespaces
    r = namespaces.run_confined(ISO, sys.executable, ["-c", textwrap.dedent(code)], capture_output=True, text=True,
                                timeout=30)
    assert r.returncode == 0, r
    return r.stdout.split()


@needs_bwrap
def test_layer_filesystem_view_is_minimal_and_read_only():
    out = _raw(f"""
        import os
        print(os.path.exists('/home'), os.path.exists('/proc/self'), os.path.exists({OUT!r}), os.path.exists('/etc/passwd'))
        for p in ('/usr/x', '/x', {sys.prefix + '/x'!r}):
            try:
                open(p, 'w')
                print('wrote')
            except OSError as e:
                print(e.errno)
        """)
    assert out == ["False", "False", "False", "False", "30", "30", "30"]  # EROFS everywhere outside /tmp


@needs_bwrap
def test_layer_private_tmpfs_and_shm():
    out = _raw(f"""
        import os
        open('/tmp/{MARK}', 'w').write('x'); open('/dev/shm/{MARK}', 'w').write('x')
        print(os.getcwd(), sorted(os.listdir('/tmp')))
        """)
    assert out[0] == "/tmp" and not os.path.exists(f"/dev/shm/{MARK}") and not os.path.exists(f"/tmp/{MARK}")


@needs_bwrap
def test_layer_uid_no_new_privs_and_seccomp():
    out = _raw("""
        import os, ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        print(os.getuid(), os.getgid(), libc.prctl(39, 0, 0, 0, 0))  # PR_GET_NO_NEW_PRIVS
        for call in (lambda: os.memfd_create('x'), lambda: os.unshare(os.CLONE_NEWNS) if hasattr(os, 'unshare') else
                     (_ for _ in ()).throw(OSError(1, 'x'))):
            try:
                call(); print('allowed')
            except OSError as e:
                print(e.errno)
        print(libc.ptrace(0, 0, 0, 0), ctypes.get_errno())
        """)
    assert out[:3] == ["65534", "65534", "1"]
    assert out[3:5] == ["1", "1"] and out[5:] == ["-1", "1"], out  # EPERM from the filter
