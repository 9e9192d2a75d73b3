"""Throughput of the code data pipeline on the stdlib, and near-dedup precision/recall on planted copies.

    python experiments/bench_datapipe.py                      # cleaning pipeline + near-dedup P/R
    python experiments/bench_datapipe.py --tasks all --nice -10
    python experiments/bench_datapipe.py --skip throughput    # only the P/R and secret-scan checks
    python experiments/bench_datapipe.py --quick --out /tmp/datapipe.json   # smoke run: 60 files, every part

Parts (each runs in a fresh worker process in its own session; `--nice -10` sets that
session's autogroup niceness so other jobs on a shared machine distort less):

* **throughput**: `configs/data_pipeline.py` (the whole stdlib, tests included: ~1,800
  files, ~31 MB) with `workers=2`, through `run_pipeline` exactly as the `data` job runs
  it, into a temporary directory. `tasks=''` is the cleaning pipeline (collection,
  license, quality, HumanEval decontamination, bandit, PII, detect-secrets, exact and
  near dedup, split, mixing, sharded output, report and plots); `--tasks all` adds every
  task builder of codejax.codedata.tasks. Reported: files/s and MB/s over the wall time
  (files listed and bytes read, dropped files included), CPU seconds of all processes
  (steadier than wall time on a busy machine), per-stage CPU seconds summed over workers,
  and the 1-minute load average before and after.
* **near-dedup P/R**: the readable stdlib `.py` files are the originals; `--planted`
  (200) of those with at least 30 lines get a copy with 1-6 small edits (rename an
  identifier everywhere, delete a line, add a line, rewrite a comment). Signatures and
  clustering are the pipeline's own (`codejax.codedata.dedup`, 128 permutations, 5-token
  shingles). Recall: planted copies that land in their original's cluster, over all
  copies and over the copies whose exact shingle Jaccard with their original is at least
  the threshold (what LSH promises to find). Precision, three ways, against the exact
  Jaccard: of the links the pipeline made (pairs whose estimated Jaccard passed the
  threshold), of the files it drops (each must have an exact match at or above the
  threshold in its cluster), and of all pairs that share a cluster (clusters are connected
  components, so A~B~C puts A and C together even when they differ more). Pairs of two
  originals below the threshold are the false positives among the originals. Swept over
  thresholds.
* **secret-scan prefilter**: on every `--secrets-every`-th stdlib file, the secrets found
  with the prefilter (codejax.codedata.secret_scan) against detect-secrets' full line scan,
  and the time of each.
"""
from __future__ import annotations

import argparse
import datetime
import io
import itertools
import json
import keyword
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
import tokenize

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from benchinfo import machine, quick_out, versions  # noqa: E402  experiments/benchinfo.py

RESULTS = os.path.join(HERE, "results", "bench_datapipe.json")
PARTS = ("throughput", "near_dedup", "secrets")
# --quick: every part on the first 60 stdlib files (the secret scan on every 2nd), 10 planted copies, one threshold.
QUICK = dict(max_files=60, planted=10, thresholds="0.85", secrets_every=2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--tasks", default="", help="'' (cleaning only), 'all', or comma-separated task names")
    p.add_argument("--planted", type=int, default=200)
    p.add_argument("--thresholds", default="0.7,0.8,0.85,0.9")
    p.add_argument("--secrets-every", type=int, default=6)
    p.add_argument("--skip", default="", help=f"comma-separated parts to skip: {','.join(PARTS)}")
    p.add_argument("--nice", type=int, default=0, help="autogroup niceness of the worker session, e.g. -10")
    p.add_argument("--max-files", type=int, default=0,
                   help="only the first N stdlib files in every part (0 = all): a smaller, faster run")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: every part on the first 60 files, 10 planted copies (explicit flags win)")
    p.add_argument("--out", default=None, help=f"JSON path; default {os.path.relpath(RESULTS)} "
                                                "(with --quick: the temp dir)")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        explicit = {a.lstrip("-").split("=")[0].replace("-", "_")
                    for a in (argv if argv is not None else sys.argv[1:])}
        for k, v in QUICK.items():
            if k not in explicit:
                setattr(args, k, v)
    if args.out is None:  # a smoke run never overwrites the committed results
        args.out = quick_out("bench_datapipe_quick.json") if args.quick else RESULTS
    return args


def cpu_seconds() -> float:
    return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for f in ("ru_utime", "ru_stime"))


# ----------------------------------------------------------------------------- throughput

def throughput(args) -> dict:
    from codejax.config import load_config_file
    from codejax.codedata import tasks as task_module
    from codejax.codedata.pipeline import run_pipeline, settings_from_config

    config = load_config_file(os.path.join(ROOT, "configs", "data_pipeline.py"))
    d = config.data_pipeline
    d.workers, d.progress_bar = args.workers, False
    if args.max_files:
        d.max_files = args.max_files
    d.tasks = ",".join(task_module.TASK_NAMES) if args.tasks == "all" else args.tasks
    settings = settings_from_config(config)
    load_before, cpu0, t0 = os.getloadavg()[0], cpu_seconds(), time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-datapipe-") as out:
        summary = run_pipeline(settings, out)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
        with open(os.path.join(out, "report.json"), encoding="utf-8") as f:
            rep = json.load(f)
    mb = rep["bytes_read"] / 1e6
    return {"tasks": d.tasks, "workers": settings.worker_count, "files_listed": summary["files_listed"],
            "files_kept": summary["files_kept"], "mb_read": round(mb, 2), "wall_s": round(wall, 1),
            "files_per_s": round(summary["files_listed"] / wall, 1), "mb_per_s": round(mb / wall, 3),
            "cpu_s": round(cpu, 1), "cpu_ms_per_file": round(1000 * cpu / summary["files_listed"], 1),
            "stage_cpu_s": rep["timing"]["stage_cpu_s"], "funnel": rep["funnel"], "dropped": rep["dropped"],
            "events": {k: v for k, v in rep["events"].items() if k.split("/")[0] in ("pii", "secrets", "errors")},
            "dedup": {k: rep["dedup"][k] for k in ("exact_duplicates", "near_duplicates", "near_clusters",
                                                    "largest_cluster", "examples")},
            "split": rep["split"], "rows": rep["rows"], "tasks_rows": rep["tasks"]["rows_by_task"],
            "load_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


# ----------------------------------------------------------------------------- near-dedup P/R

def _identifiers(text: str) -> list[str]:
    names = set()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.NAME and len(tok.string) >= 3 and not keyword.iskeyword(tok.string):
                names.add(tok.string)
    except (tokenize.TokenError, SyntaxError, IndentationError):
        pass
    return sorted(names)


def plant(text: str, rng: random.Random) -> tuple[str, list[str]]:
    """A near-copy of `text` with 1-6 small edits; returns it and the edit kinds."""
    lines, done = text.split("\n"), []
    names = _identifiers(text)
    for _ in range(rng.randint(1, 6)):
        kind = rng.choice(("rename", "delete", "add", "comment"))
        if kind == "rename" and names:
            old = rng.choice(names)
            lines = re.sub(rf"\b{re.escape(old)}\b", old + "_v2", "\n".join(lines)).split("\n")
        elif kind == "delete" and len(lines) > 5:
            candidates = [i for i, line in enumerate(lines) if line.strip()]
            del lines[rng.choice(candidates)]
        elif kind == "add":
            i = rng.randrange(len(lines) + 1)
            indent = re.match(r"[ \t]*", lines[i - 1] if i else "").group()
            lines.insert(i, indent + rng.choice(("# TODO: check this again", "_unused = None", "pass")))
        else:
            comments = [i for i, line in enumerate(lines) if line.lstrip().startswith("#")]
            if not comments:
                continue
            i = rng.choice(comments)
            lines[i] = lines[i][:len(lines[i]) - len(lines[i].lstrip())] + "# reworded comment for the copy"
        done.append(kind)
    return "\n".join(lines), done


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def near_dedup(args) -> dict:
    from codejax.codedata import collect, dedup

    originals = []
    refs = collect.iter_refs("stdlib", ["python"], True, stats=__import__("collections").Counter())
    for ref in itertools.islice(refs, args.max_files or None):
        if not ref["path"].endswith(".py"):
            continue
        text, why = collect.read_content(ref, 1_000_000)
        if text is not None and text.strip():
            originals.append((ref["path"], text))
    rng = random.Random(0)
    eligible = [i for i, (_, t) in enumerate(originals) if t.count("\n") >= 30]
    chosen = sorted(rng.sample(eligible, args.planted))
    copies = []  # (original index, text, edit kinds)
    for i in chosen:
        text, kinds = plant(originals[i][1], rng)
        copies.append((i, text, kinds))
    keys = [("stdlib", p) for p, _ in originals] + [("planted", f"{originals[i][0]}#copy") for i, _, _ in copies]
    texts = [t for _, t in originals] + [t for _, t, _ in copies]
    t0 = time.perf_counter()
    sigs = [dedup.signature(t, 128, 5) for t in texts]
    sig_s = time.perf_counter() - t0
    shingle_sets: dict[int, set] = {}

    def shingles(i):
        if i not in shingle_sets:
            shingle_sets[i] = dedup.shingles(texts[i], 5)
        return shingle_sets[i]

    n = len(originals)
    true_j = [_jaccard(shingles(i), shingles(n + k)) for k, (i, _, _) in enumerate(copies)]
    sweep = []
    for threshold in (float(t) for t in args.thresholds.split(",")):
        t0 = time.perf_counter()
        clusters = dedup.near_duplicate_clusters(keys, sigs, threshold, 128)
        cluster_s = time.perf_counter() - t0
        cluster_of = {i: c for c, members in enumerate(clusters) for i in members}
        found = [cluster_of.get(n + k, -1) >= 0 and cluster_of.get(n + k) == cluster_of.get(i)
                 for k, (i, _, _) in enumerate(copies)]
        above = [f for f, j in zip(found, true_j) if j >= threshold]
        pairs = true_pairs = edges = true_edges = fp_originals = original_pairs = dropped = true_drops = 0
        fp_examples = []
        for members in clusters:
            best = {i: 0.0 for i in members}  # each member's highest exact Jaccard within its cluster
            for a in range(len(members)):
                for b in range(a + 1, len(members)):
                    i, j = members[a], members[b]
                    exact = _jaccard(shingles(i), shingles(j))
                    best[i], best[j] = max(best[i], exact), max(best[j], exact)
                    pairs += 1
                    true_pairs += exact >= threshold
                    if dedup.estimated_jaccard(sigs[i], sigs[j]) >= threshold:  # a link the pipeline made
                        edges += 1
                        true_edges += exact >= threshold
                    if i < n and j < n:
                        original_pairs += 1
                        if exact < threshold:
                            fp_originals += 1
                            if len(fp_examples) < 5:
                                fp_examples.append([keys[i][1], keys[j][1], round(exact, 3)])
            for i in members[1:]:  # the pipeline drops all but the first
                dropped += 1
                true_drops += best[i] >= threshold
        sweep.append({"threshold": threshold, "recall_all": round(sum(found) / len(found), 4),
                      "recall_above_threshold": round(sum(above) / len(above), 4) if above else None,
                      "planted_above_threshold": len(above), "clusters": len(clusters), "pairs_in_clusters": pairs,
                      "pair_precision": round(true_pairs / pairs, 4) if pairs else None,
                      "edge_precision": round(true_edges / edges, 4) if edges else None, "edges": edges,
                      "drop_precision": round(true_drops / dropped, 4) if dropped else None, "dropped": dropped,
                      "original_pairs": original_pairs, "false_positive_original_pairs": fp_originals,
                      "false_positive_examples": fp_examples, "cluster_s": round(cluster_s, 2),
                      "missed_examples": [[originals[i][0], round(j, 3), kinds] for f, j, (i, _, kinds)
                                          in zip(found, true_j, copies) if not f][:5]})
    hist = [0] * 10
    for j in true_j:
        hist[min(int(j * 10), 9)] += 1
    return {"originals": n, "planted": len(copies), "signature_s": round(sig_s, 1),
            "planted_true_jaccard_deciles": hist, "sweep": sweep}


# ----------------------------------------------------------------------------- secret-scan prefilter

def secrets(args) -> dict:
    import collections

    from detect_secrets.core.scan import _process_line_based_plugins

    from codejax.codedata import collect, secret_scan

    refs = list(collect.iter_refs("stdlib", ["python"], True, collections.Counter()))
    refs = refs[:args.max_files or None][::args.secrets_every]
    texts = [(r["path"], t) for r in refs for t in [collect.read_content(r, 1_000_000)[0]] if t]
    secret_scan.configure()
    t0 = time.perf_counter()
    fast = {p: sum(secret_scan.redact_secrets(t, p)[1].values()) for p, t in texts}
    fast_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    full = {p: sum(1 for line in t.split("\n") for _ in _process_line_based_plugins([(1, line)], p))
            for p, t in texts}
    full_s = time.perf_counter() - t0
    differ = sorted(p for p in fast if fast[p] != full[p])
    return {"files": len(texts), "mb": round(sum(len(t) for _, t in texts) / 1e6, 2),
            "secrets_prefiltered": sum(fast.values()), "secrets_full_scan": sum(full.values()),
            "files_differing": differ[:10], "prefiltered_s": round(fast_s, 1), "full_scan_s": round(full_s, 1)}


# ----------------------------------------------------------------------------- driver

def run_worker(args) -> None:
    if args.nice:
        try:
            with open("/proc/self/autogroup", "w", encoding="utf-8") as f:
                f.write(str(args.nice))
        except OSError as e:
            print(f"[bench] could not set autogroup niceness: {e}", file=sys.stderr)
    result = {"throughput": throughput, "near_dedup": near_dedup, "secrets": secrets}[args.worker](args)
    print(json.dumps(result))


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        return run_worker(args)
    skip = set(filter(None, args.skip.split(",")))
    info = {"date": datetime.date.today().isoformat(), "machine": machine(),
            "versions": versions(["datasketch", "detect-secrets", "bandit", "libcst", "numpy", "pyarrow"]),
            "command": "python experiments/bench_datapipe.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "settings": {"workers": args.workers, "tasks": args.tasks, "planted": args.planted, "nice": args.nice,
                         "max_files": args.max_files, "thresholds": args.thresholds,
                         "secrets_every": args.secrets_every}}
    results = {}
    for part in PARTS:
        if part in skip:
            continue
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", part, "--workers", str(args.workers),
               "--tasks", args.tasks, "--planted", str(args.planted), "--thresholds", args.thresholds,
               "--secrets-every", str(args.secrets_every), "--nice", str(args.nice),
               "--max-files", str(args.max_files)]
        print(f"[bench] {part} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, start_new_session=True)
        if proc.returncode != 0:
            raise SystemExit(f"[bench] {part} failed:\n{proc.stderr[-3000:]}")
        results[part] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(results[part], indent=1)[:2500], file=sys.stderr)
    info["machine"]["loadavg_after"] = os.getloadavg()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({**info, **results}, f, indent=2)
    print(f"[bench] wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
