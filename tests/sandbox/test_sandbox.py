"""The sandbox against adversarial programs: each must be contained, none may pass, and this
pytest process (and the host files and processes it owns) must come out unharmed."""
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from codejax.sandbox import Limits, Program, Status, isolation, run_program, run_programs
from codejax.sandbox import namespaces
from codejax.sandbox.runner import HARNESS

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox is Linux-only")

LIM = Limits(timeout_s=15, cpu_s=10, memory_mb=512, max_output_bytes=1 << 20)
ISO = isolation() if sys.platform.startswith("linux") else None
BOTH = pytest.mark.parametrize("namespaces", [True, False], ids=["namespaces", "audit-only"])
HEX32 = re.compile(r"\b[0-9a-f]{32}\b")


def raw_confined(code):
    """A raw interpreter (no harness, no audit hook) under the kernel layers alone."""
    if ISO.confined:
        return namespaces.run_confined(ISO, sys.executable, ["-c", code], capture_output=True, timeout=30)
    return subprocess.run([*ISO.prefix, sys.executable, "-I", "-S", "-c", code], capture_output=True, timeout=30)


def run(code, tests="pass", limits=LIM, **kw):
    return run_program(Program(textwrap.dedent(code), textwrap.dedent(tests)), limits, **kw)


def contained(res, *statuses):
    assert not res.passed, res
    assert res.status is not Status.ERROR, res  # the sandbox reached the program
    if statuses:
        assert res.status in statuses, res
    # Nothing token-shaped leaked, apart from the all-zero fakes some cheats print.
    assert [m for m in HEX32.findall(res.stdout + res.stderr) if m != "0" * 32] == [], res


def host_processes_matching(marker):
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(pid))
            except OSError:
                pass
    return found


# ---------------------------------------------------------------- positives

def test_correct_program_passes():
    res = run("def add(a, b):\n    return a + b\nprint('hello')", "assert add(2, 3) == 5\nprint('tests ran')")
    assert res.passed and res.status == "passed", res
    assert res.returncode == 0 and res.stdout == "hello\ntests ran\n" and res.stderr == ""
    assert res.reason == "" and not res.truncated and 0 < res.wall_s < LIM.timeout_s


def test_wrong_program_fails_with_the_assertion_message():
    res = run("def add(a, b):\n    return a - b", "assert add(2, 3) == 5, 'add(2, 3) should be 5'")
    contained(res, Status.FAILED)
    assert res.reason == "AssertionError: add(2, 3) should be 5"
    assert 'File "<tests>", line 1' in res.stderr and "assert add(2, 3) == 5" in res.stderr
    assert "_harness" not in res.stderr


@pytest.mark.parametrize("code", ["def f(:\n    pass", "def f(x):\n    return x\ns = '''"])
def test_syntax_errors_fail(code):
    # The second one would swallow the tests as a string if they were concatenated to it.
    res = run(code, "assert f(1) == 1")
    contained(res, Status.FAILED)
    assert res.reason.startswith("SyntaxError"), res


def test_output_under_the_cap_passes():
    res = run("for i in range(5000):\n    print('x' * 99)", "assert True", Limits(max_output_bytes=600_000))
    assert res.passed, res
    assert len(res.stdout) == 500_000 and not res.truncated


def test_stdin_and_everyday_stdlib():
    res = run_program(Program(code=textwrap.dedent("""
        import collections, dataclasses, enum, functools, heapq, itertools, json, logging, math, random, re
        import signal, tempfile, threading, typing
        P = collections.namedtuple('P', 'a b', defaults=(0,))
        class Color(enum.Enum):
            RED = 1
        class T(typing.NamedTuple):
            x: int
        @dataclasses.dataclass
        class D:
            y: int = 2
        logging.getLogger().warning('a warning')
        out = []
        t = threading.Thread(target=out.append, args=(1,)); t.start(); t.join()
        got = []
        signal.signal(signal.SIGALRM, lambda s, frame: got.append(frame))
        signal.raise_signal(signal.SIGALRM)
        with open('scratch.txt', 'w') as f:
            f.write('data')
        with tempfile.NamedTemporaryFile('w', delete=False) as f:
            f.write('more')
        try:
            raise ValueError('caught')
        except ValueError:
            pass
        line = input()
        """), tests=textwrap.dedent("""
        assert P(1) == (1, 0) and Color.RED.value == 1 and T(3).x == 3 and D().y == 2
        assert out == [1] and len(got) == 1
        assert open('scratch.txt').read() == 'data' and line == 'from stdin'
        assert json.loads('[1]') == [1] and math.isqrt(10) == 3
        """), stdin="from stdin\n"), LIM)
    assert res.passed, res
    assert "a warning" in res.stderr


def test_pool_runs_mixed_programs_in_order():
    kinds = {
        "pass": (Program("def f(x):\n    return x * 2", "assert f(3) == 6"), Status.PASSED),
        "fail": (Program("def f(x):\n    return x", "assert f(3) == 6"), Status.FAILED),
        "syntax": (Program("def f(x) return x", "assert f(3) == 6"), Status.FAILED),
        "exit": (Program("import sys\nsys.exit(0)", "assert False"), Status.FAILED),
        "fork": (Program("import os\nos.fork()", "pass"), Status.FAILED),
        "sleep": (Program("import time\ntime.sleep(60)", "pass"), Status.TIMEOUT),
        "spam": (Program("while True:\n    print('y' * 4096)", "pass"), Status.OUTPUT_LIMIT),
        "kill": (Program("import os\nos.kill(os.getppid(), 9)", "pass"), Status.FAILED),
    }
    order = [k for i in range(5) for k in kinds if k != "sleep" or i < 2]
    order += ["pass"] * (40 - len(order))  # 40 programs, two of them time out
    progs = [Program(kinds[k][0].code, kinds[k][0].tests, name=f"{i}-{k}") for i, k in enumerate(order)]
    start = time.monotonic()
    results = run_programs(progs, Limits(timeout_s=5, cpu_s=5, max_output_bytes=64 << 10), workers=4, progress=True)
    assert time.monotonic() - start < 45
    assert [r.name for r in results] == [p.name for p in progs]
    assert [r.status for r in results] == [kinds[k][1] for k in order], [(r.name, r.status, r.reason) for r in results]


# ---------------------------------------------------------------- limits

def test_wall_clock_limit():
    res = run("import time\ntime.sleep(60)", limits=Limits(timeout_s=1))
    contained(res, Status.TIMEOUT)
    assert "wall-clock" in res.reason and res.wall_s < 5


def test_cpu_time_limit():
    res = run("while True:\n    pass", limits=Limits(timeout_s=20, cpu_s=1))
    contained(res, Status.TIMEOUT)
    assert "CPU" in res.reason and res.wall_s < 10, res


@pytest.mark.parametrize("code", ["x = bytearray(4 << 30)", "xs = []\nwhile True:\n    xs.append(bytearray(1 << 24))"])
def test_memory_bomb(code):
    res = run(code, limits=Limits(memory_mb=256))
    contained(res, Status.MEMORY)


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_huge_output_is_cut_off(stream):
    cap = 256 << 10
    code = f"import sys\nline = 'z' * 999 + '\\n'\nfor _ in range(100_000):\n    sys.{stream}.write(line)"  # 100 MB
    res = run(code, limits=Limits(max_output_bytes=cap, timeout_s=15))
    contained(res, Status.OUTPUT_LIMIT)
    assert res.truncated and len(getattr(res, stream)) <= cap and res.wall_s < 10


def test_big_file_is_cut_off_by_the_file_size_limit():
    res = run("with open('big', 'wb') as f:\n    f.write(b'0' * (8 << 20))", limits=Limits(file_size_mb=1))
    contained(res, Status.FAILED)
    assert "File too large" in res.reason or "EFBIG" in res.reason or "27" in res.reason, res


# ---------------------------------------------------------------- processes

@BOTH
@pytest.mark.parametrize("code", [
    "import os\nwhile True:\n    os.fork()",
    "import subprocess\nsubprocess.Popen(['sleep', '987.6543'])",
    "import os\nos.system('sleep 987.6543 &')",
    "import os\nos.posix_spawn('/bin/sleep', ['sleep', '987.6543'], {})",
    "import os\nos.execv('/bin/sleep', ['sleep', '987.6543'])",
    "import pty\npty.fork()",
    "import multiprocessing, time\np = multiprocessing.Process(target=time.sleep, args=(987.6543,))\np.start()",
    "import _posixsubprocess\n_posixsubprocess.fork_exec(['sleep'], [b'/bin/sleep'], True, (), None, None,"
    " -1, -1, -1, -1, -1, -1, -1, -1, False, False, None, None, None, -1, None, False)",
    "import _imp, importlib.machinery as m\n"
    "mod = _imp.create_dynamic(m.PathFinder.find_spec('_posixsubprocess'))",
    "import _imp, importlib.machinery as m\nposix = _imp.create_builtin(m.BuiltinImporter.find_spec('posix'))\n"
    "posix.mknod('node')",
], ids=["fork-bomb", "popen", "system", "posix_spawn", "execv", "pty", "multiprocessing", "fork_exec",
        "reload-posixsubprocess", "fresh-posix"])
def test_no_new_processes(code, namespaces):
    res = run(code, "assert False, 'unreachable'", namespaces=namespaces)
    contained(res, Status.FAILED)
    assert "not allowed" in res.stderr or "out of pty devices" in res.stderr, res  # pty.fork falls back to openpty
    assert host_processes_matching("987.6543") == []


@pytest.mark.skipif(ISO is None or "pid" not in ISO.namespaces, reason="no pid namespace here")
def test_pid_namespace_kills_leftovers_even_without_the_hook():
    # The kernel layer on its own: a raw interpreter (no harness, no audit hook) leaves a
    # child behind; the child dies with the namespace's init.
    code = "import os, time\nif os.fork() == 0:\n    time.sleep(987.6544)\nelse:\n    print(os.getpid())"
    r = raw_confined(code)
    assert r.stdout.strip() in (b"1", b"2"), r  # init of its own namespace (bubblewrap's init is 1)
    time.sleep(0.2)
    assert host_processes_matching("987.6544") == []


@BOTH
def test_cannot_signal_host_processes(namespaces):
    victim = subprocess.Popen(["sleep", "60"])
    try:
        code = f"""
            import os, signal
            errors = []
            for attempt in (lambda: os.kill({victim.pid}, 9), lambda: os.killpg({victim.pid}, 9),
                            lambda: os.kill(os.getppid(), 9), lambda: os.kill(-1, 9),
                            lambda: signal.pidfd_send_signal(os.pidfd_open({victim.pid}), 9),
                            lambda: signal.pthread_kill(12345, 9)):
                try:
                    attempt()
                except Exception as e:
                    errors.append(type(e).__name__)
            print(errors)
            """
        res = run(code, "assert False", namespaces=namespaces)
        contained(res, Status.FAILED)
        time.sleep(0.1)
        assert victim.poll() is None, "the sandboxed program killed a host process"
        assert res.stdout.count("Error") == 6, res
    finally:
        victim.kill()
        victim.wait()


# ---------------------------------------------------------------- files

@BOTH
def test_no_writes_outside_the_working_directory(tmp_path, namespaces):
    target = tmp_path / "pwned.txt"
    code = f"""
        import os, pathlib, shutil, sqlite3
        target = {str(target)!r}
        rel = os.path.relpath(target)
        open('inside.txt', 'w').write('ok')
        attempts = [
            lambda: open(target, 'w').write('x'),
            lambda: open(rel, 'a').write('x'),
            lambda: os.close(os.open(target, os.O_CREAT | os.O_WRONLY)),
            lambda: pathlib.Path(target).write_text('x'),
            lambda: shutil.copy('inside.txt', target),
            lambda: os.rename('inside.txt', target),
            lambda: os.mkdir(target),
            lambda: os.symlink(target, 'link'),
            lambda: os.link('inside.txt', target),
            lambda: os.mknod(target),
            lambda: sqlite3.connect(target).execute('create table t (x)'),
            lambda: os.close(os.open('pwned.txt', os.O_CREAT | os.O_WRONLY, dir_fd=os.open({str(tmp_path)!r}, os.O_RDONLY))),
            lambda: os.chmod({str(tmp_path)!r}, 0o777),
            lambda: os.utime({str(tmp_path)!r}),
        ]
        blocked = 0
        for a in attempts:
            try:
                a()
            except Exception:
                blocked += 1
        print('blocked', blocked, 'of', len(attempts))
        """
    mode = tmp_path.stat().st_mode
    res = run(code, f"import os\nassert os.path.exists({str(target)!r})", namespaces=namespaces)
    contained(res, Status.FAILED)
    # Under bubblewrap a symlink inside the private tmpfs is harmless (and allowed); the rest fail.
    assert f"blocked {13 if namespaces and ISO.confined else 14} of 14" in res.stdout, res
    assert list(tmp_path.iterdir()) == [] and tmp_path.stat().st_mode == mode


@BOTH
def test_reads_outside_the_allowed_paths_are_blocked(namespaces):
    code = f"""
        import os
        leaked = []
        for path in ('/etc/passwd', {HARNESS!r}, '/proc/self/mem', '/proc/self/environ', '/proc/1/environ',
                     '/proc/%d/environ' % os.getppid(), '/proc/self/root/etc/hostname'):
            try:
                with open(path, 'rb') as f:
                    leaked.append((path, f.read(64)))
            except Exception:
                pass
        print(leaked)
        """
    res = run(code, "assert leaked", namespaces=namespaces)
    contained(res, Status.FAILED)
    assert res.stdout.strip() == "[]", res


def test_working_directory_is_fresh_and_deleted_afterwards():
    code = """
        import os
        cwd = os.getcwd()
        print(cwd)
        assert os.listdir('.') == [] and os.environ['HOME'] == cwd and os.environ['TMPDIR'] == cwd
        os.makedirs('a/b')
        open('a/b/f', 'w').write('x')
        os.chmod('a/b', 0)
        os.chmod('a', 0)
        """
    for ns in (True, False):
        res1, res2 = run(code, namespaces=ns), run(code, namespaces=ns)
        assert res1.passed and res2.passed, (res1, res2)
        d1, d2 = res1.stdout.strip(), res2.stdout.strip()
        if ns and ISO.confined:  # a private tmpfs each time, gone with the mount namespace
            assert d1 == d2 == namespaces.WORKDIR
        else:
            assert d1 != d2 and not os.path.exists(d1) and not os.path.exists(d2)


def test_environment_is_scrubbed_and_secrets_stay_out(monkeypatch):
    secret = "hunter2-" + os.urandom(8).hex()
    monkeypatch.setenv("CODEJAX_SECRET", secret)
    code = """
        import os, glob
        print(sorted(os.environ))
        print(dict(os.environ))
        for path in ['/proc/self/environ', '/proc/%d/environ' % os.getppid(), '/proc/1/environ'] + glob.glob('/proc/*/environ'):
            try:
                print(open(path, 'rb').read())
            except Exception as e:
                print(path, type(e).__name__)
        """
    res = run(code, "pass")
    assert res.passed, res
    assert secret not in res.stdout + res.stderr
    assert res.stdout.splitlines()[0] == str(sorted(
        ["HOME", "LANG", "LC_ALL", "MKL_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "PATH", "TMPDIR"]))


# ---------------------------------------------------------------- network

@pytest.fixture
def listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    accepted = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                accepted.append(conn)
            except OSError:
                pass
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], accepted
    stop.set()
    t.join()
    srv.close()


@BOTH
def test_no_network(listener, namespaces):
    port, accepted = listener
    code = f"""
        import socket, urllib.request
        results = []
        def attempt(f):
            try:
                f()
                results.append('connected')
            except Exception as e:
                results.append(type(e).__name__)
        attempt(lambda: socket.create_connection(('127.0.0.1', {port}), timeout=2))
        attempt(lambda: socket.socket().connect(('127.0.0.1', {port})))
        attempt(lambda: socket.create_connection(('1.1.1.1', 53), timeout=2))
        attempt(lambda: socket.create_connection(('8.8.8.8', 443), timeout=2))
        attempt(lambda: socket.getaddrinfo('example.com', 80))
        attempt(lambda: urllib.request.urlopen('http://example.com', timeout=2))
        print(results)
        """
    res = run(code, "assert 'connected' in results", namespaces=namespaces)
    contained(res, Status.FAILED)
    assert "connected" not in res.stdout, res
    time.sleep(0.3)
    assert accepted == []


@pytest.mark.skipif(ISO is None or not ISO.network_namespace, reason="no network namespace here")
def test_network_namespace_alone_blocks_loopback(listener):
    port, accepted = listener
    code = f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('connected')\n" \
           f"except OSError as e:\n    print('blocked', e.errno)"
    r = raw_confined(code)
    assert r.stdout.startswith(b"blocked"), r
    time.sleep(0.3)
    assert accepted == []


# ---------------------------------------------------------------- cheating the pass criterion

EXITS = ["exit(0)", "quit()", "import sys\nsys.exit(0)", "import os\nos._exit(0)", "raise SystemExit",
         "raise SystemExit(0)", "import _thread\n_thread.exit()", "import signal\nsignal.raise_signal(signal.SIGTERM)",
         "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "import sys\nsys.stdout.close()",
         "import os\nos.close(1)\nos.close(2)", "import threading, os\nthreading.Timer(0, os._exit, (0,)).start()\n"
         "import time\ntime.sleep(5)"]


@pytest.mark.parametrize("code", EXITS, ids=range(len(EXITS)))
def test_exiting_before_the_tests_is_a_failure(code):
    res = run("def f():\n    return 1\n" + code, "assert f() == 2")
    contained(res)


def test_exiting_from_inside_the_tests_is_a_failure():
    res = run("import os\ndef f():\n    os._exit(0)", "assert f() == 2")
    contained(res, Status.FAILED)
    assert "without finishing the tests" in res.reason


CHEATS = {
    "patch-print": "import builtins\nbuiltins.print = lambda *a, **k: None\ndef f():\n    return 1",
    "patch-assertionerror": "import builtins\nbuiltins.AssertionError = type('Nope', (Exception,), {})\ndef f():\n    return 1",
    "patch-exec": "import builtins\nbuiltins.exec = lambda *a, **k: None\nbuiltins.compile = lambda *a, **k: None\n"
                  "def f():\n    return 1",
    "shadow-builtins": "__builtins__ = {'print': print}\ndef f():\n    return 1",
    "fake-stdout": "import sys, io\nclass W(io.StringIO):\n    def write(self, s):\n        return sys.__stdout__.write(s)\n"
                   "sys.stdout = W()\nprint('\\n' + '0' * 32)\ndef f():\n    return 1",
    "fake-token-and-exit": "import os\nos.write(1, b'\\n' + b'0' * 32 + b'\\n')\nos._exit(0)",
    "atexit-fake-token": "import atexit\natexit.register(lambda: print('\\n' + '0' * 32))\ndef f():\n    return 1",
    "gc-hunt": "import gc, re\nfound = [o for o in gc.get_objects() if isinstance(o, (str, bytes)) and re.fullmatch(rb'[0-9a-f]{32}', o if isinstance(o, bytes) else o.encode())]\n"
               "print(found)\nimport os\nos._exit(0)",
    "getframe-hunt": "import sys\nf = sys._getframe()\nwhile f:\n    print(f.f_locals)\n    f = f.f_back\ndef f():\n    return 1",
    "traceback-hunt": "import sys\ntry:\n    raise ValueError\nexcept ValueError:\n    tb = sys.exc_info()[2]\n"
                      "frame = tb.tb_frame\nwhile frame:\n    print(frame.f_locals)\n    frame = frame.f_back",
    "generator-hunt": "def g():\n    yield 1\nprint(g().gi_frame.f_back)",
    "current-frames": "import sys\nprint([f.f_locals for f in sys._current_frames().values()])",
    "settrace-jump": "import sys\nsys.settrace(lambda *a: None)",
    "signal-frame": "import signal\nframes = []\nsignal.signal(signal.SIGALRM, lambda s, f: frames.append(f))\n"
                    "signal.raise_signal(signal.SIGALRM)\nassert frames[0] is not None, 'no frame'",
    "harness-source": f"print(open({HARNESS!r}).read())",
    "ctypes": "import ctypes\nctypes.CDLL(None).exit(0)",
    "subinterpreter": "import _xxsubinterpreters as i\ni.run_string(i.create(), 'import os; os._exit(0)')",
    "add-audit-hook": "import sys\nsys.addaudithook(lambda *a: print('USER HOOK', a))\ndef f():\n    return 1",
    "harness-globals": "import _imp\nh = _imp.create_builtin.__globals__\nh['_finish'](lambda: None, lambda: None)\n"
                       "h['_run']('x = 1', 'pass', [], lambda: None, lambda: None, 2, None, None, __import__('builtins'), "
                       "type(__import__('sys'))('m'))\nh['main']()",
    "replace-harness-code": "import _imp\nh = _imp.create_builtin.__globals__\nh['_finish'].__code__ = (lambda a, b: None).__code__",
    "rlimit": "import resource\nresource.setrlimit(resource.RLIMIT_CPU, (-1, -1))",
    "leave-process-group": "import os\nos.setsid()",
    # Ways out of the interpreter: hand-made bytecode and native code written to the working dir.
    "code-object": "def f():\n    return 1\nf.__code__.replace(co_consts=(None, 2))",
    "native-module": "import shutil, sys, _bisect\nshutil.copy(_bisect.__file__, './evil.cpython-311-x86_64-linux-gnu.so')\n"
                     "sys.path.insert(0, '.')\nimport evil",
    "sourceless-pyc": "import sys\nopen('ev.pyc', 'wb').write(b'\\0' * 64)\nsys.path.insert(0, '.')\nimport ev",
    "thread-prints-later": "import threading, time\nthreading.Thread(target=lambda: (time.sleep(0.5), print('\\n' + '0' * 32))).start()\n"
                           "def f():\n    return 1",
}


@pytest.mark.parametrize("name", list(CHEATS))
def test_cheats_do_not_pass(name):
    res = run(CHEATS[name], "assert f() == 2, 'wrong answer'")
    contained(res)
    assert "USER HOOK" not in res.stdout


def test_checks_are_not_fooled_by_lying_objects(tmp_path):
    """Objects whose __hash__/__eq__/properties answer differently on each call: the hook works on
    exact copies, so what it checks is what the C code then uses."""
    db = tmp_path / "evil.db"
    code = f"""
        import _bisect, _imp, shutil, sqlite3
        class S(str):
            def __hash__(self):
                return hash('harmless')
            def __eq__(self, other):
                return True
        try:
            __import__(S('_testcapi'))
            print('imported')
        except ImportError:
            print('import blocked')
        try:
            sqlite3.connect(S({str(db)!r})).execute('create table t (x)')
        except Exception:  # the hook's refusal, or (bubblewrap) a path that is not in the view
            print('sqlite blocked')
        shutil.copy(_bisect.__file__, './evil.so')
        class Spec:
            name, reads = '_bisect', 0
            @property
            def origin(self):
                Spec.reads += 1
                return _bisect.__file__ if Spec.reads == 1 else './evil.so'
        try:
            _imp.create_dynamic(Spec())
        except TypeError:  # only a real ModuleSpec gets in
            pass
        print('origin read', Spec.reads, 'time(s)')
        """
    res = run(code)
    assert res.stdout.split("\n")[:3] == ["import blocked", "sqlite blocked", "origin read 0 time(s)"], res
    assert not db.exists()


def test_builtins_patched_by_the_program_do_not_reach_the_tests():
    patch = "import builtins\nbuiltins.len = lambda x: 3\n"
    assert run(patch + "def f():\n    return [1]", "assert len(f()) == 1").passed  # the judge's own len
    contained(run(patch + "def f():\n    return [1, 2]", "assert len(f()) == 3"), Status.FAILED)


def test_always_equal_object_is_not_equal_to_anything():
    """Closed by the out-of-process judge: the value arrives as a handle, equal only to itself."""
    code = "class Any:\n    def __eq__(self, other):\n        return True\ndef f(x):\n    return Any()"
    contained(run(code, "assert f(1) == 2\nassert f(2) == 'x'"), Status.FAILED)


def test_host_is_unharmed():
    # After everything above: this process still has its environment and is still alive.
    assert os.getpid() > 0 and "PATH" in os.environ
    assert not os.path.exists("/tmp/pwned.txt")
    res = run("print(1)", "pass")
    assert res.passed
