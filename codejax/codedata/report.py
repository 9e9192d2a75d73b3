"""The pipeline's stats report: report.json, report.md and plots/*.png.

The report holds everything but the data: per-stage file counts (the funnel), drops by
reason, what each cleaning stage found, dedup clusters, the split, task and mixing
figures, histograms, and timing. Only the `timing` section changes between reruns of
the same config.
"""
from __future__ import annotations

import json
import os

import numpy as np

# Order of the file stages in the funnel; a drop reason is "<stage>/<detail>".
FILE_STAGES = ("read", "language", "license", "quality", "decontam", "security", "error", "dedup/exact",
               "dedup/near")


def histogram(values, bins: int = 30, log: bool = False) -> dict:
    values = np.asarray([v for v in values if v is not None], dtype=float)
    if values.size == 0:
        return {"edges": [], "counts": [], "n": 0}
    if log:
        low, high = max(values.min(), 1.0), max(values.max(), 2.0)
        edges = np.geomspace(low, high * 1.0001, bins + 1)
    else:
        edges = np.histogram_bin_edges(values, bins=bins)
    counts, edges = np.histogram(values, bins=edges)
    return {"edges": [round(float(e), 3) for e in edges], "counts": counts.tolist(), "n": int(values.size),
            "mean": round(float(values.mean()), 3), "median": round(float(np.median(values)), 3),
            "max": round(float(values.max()), 3)}


def funnel(listed: int, dropped: dict[str, int]) -> list[dict]:
    """Files remaining after each stage, in pipeline order."""
    rows, left = [{"stage": "listed", "files": listed, "dropped": 0}], listed
    for stage in FILE_STAGES:
        gone = sum(n for reason, n in dropped.items() if reason == stage or reason.startswith(stage + "/"))
        left -= gone
        rows.append({"stage": stage, "files": left, "dropped": gone})
    return rows


def write_report(report: dict, out_dir: str, plots: bool = True) -> list[str]:
    """Write report.json, report.md and (with `plots`) the PNGs; returns the plot file names."""
    made = _plots(report, os.path.join(out_dir, "plots")) if plots else []
    for name, text in (("report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n"),
                       ("report.md", _markdown(report, made))):
        tmp = os.path.join(out_dir, name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, os.path.join(out_dir, name))
    return made


def _table(header: tuple, rows) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _markdown(r: dict, plots: list[str]) -> str:
    t = r["timing"]
    lines = ["# Code data pipeline report", "",
             f"Sources: `{r['config']['sources']}`. {r['funnel'][0]['files']} files listed "
             f"({r['bytes_read'] / 1e6:.1f} MB read), {r['files_kept']} kept after cleaning and dedup; "
             f"{t['wall_s']:.1f} s wall with {t['workers']} workers "
             f"({t['files_per_s']:.1f} files/s, {t['mb_per_s']:.2f} MB/s).", "",
             "## Files per stage", ""]
    lines += _table(("stage", "files left", "dropped"), ((f["stage"], f["files"], f["dropped"]) for f in r["funnel"]))
    lines += ["## Drops by reason", ""]
    lines += _table(("reason", "files"), sorted(r["dropped"].items()))
    lines += ["## Findings of the cleaning stages (kept and dropped files)", ""]
    lines += _table(("event", "count"), sorted(r["events"].items()))
    d = r["dedup"]
    lines += ["## Deduplication", "",
              f"{d['exact_duplicates']} exact duplicates; near-dedup (Jaccard >= {d['threshold']}, "
              f"{d['num_perm']} permutations, {d['shingle_size']}-token shingles): {d['near_clusters']} clusters, "
              f"{d['near_duplicates']} files dropped, largest cluster {d['largest_cluster']}.", ""]
    for cluster in d["examples"]:
        lines.append("- " + ", ".join(f"`{p}`" for p in cluster))
    s = r["split"]
    lines += ["", "## Split", "",
              f"By {s['split_by']}: {s['train_files']} train files / {s['eval_files']} eval files "
              f"({s['train_groups']} / {s['eval_groups']} groups).", "",
              "## Rows", ""]
    lines += _table(("output", "rows", "files"), ((k, r["rows"][k], ", ".join(r["outputs"][k])) for k in r["rows"]))
    if r["tasks"]["rows_by_task"]:
        lines += ["## Tasks and mixing", ""]
        mix = r["mixing"]["tasks"]
        lines += _table(("task", "rows built", "eval rows", "decontaminated", "share", "train rows (mixed)", "repeated"),
                        ((t, n, r["tasks"]["eval_rows_by_task"].get(t, 0), r["tasks"]["decontaminated_rows"].get(t, 0),
                          mix.get(t, {}).get("share", ""), mix.get(t, {}).get("rows", ""),
                          mix.get(t, {}).get("repeated", ""))
                         for t, n in sorted(r["tasks"]["rows_by_task"].items())))
        if r["tasks"]["skipped_by_reason"]:
            lines += _table(("task builder skip reason", "count"), sorted(r["tasks"]["skipped_by_reason"].items()))
    lines += ["## Stage CPU seconds (summed over workers)", ""]
    lines += _table(("stage", "seconds"), sorted(t["stage_cpu_s"].items(), key=lambda kv: -kv[1]))
    lines += [f"![{p}](plots/{p})" for p in plots]
    return "\n".join(lines) + "\n"


def _plots(r: dict, plot_dir: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(plot_dir, exist_ok=True)
    made = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(os.path.join(plot_dir, name), dpi=90, metadata={"Software": None})
        plt.close(fig)
        made.append(name)

    fig, ax = plt.subplots(figsize=(7, 4))
    stages = [f["stage"] for f in r["funnel"]]
    ax.barh(stages[::-1], [f["files"] for f in r["funnel"]][::-1], color="tab:blue")
    ax.set_xlabel("files left after the stage")
    ax.set_title("Files per pipeline stage")
    save(fig, "stage_counts.png")

    for key, name, xlabel, threshold, log in (
            ("file_bytes", "file_size.png", "file size (bytes)", None, True),
            ("max_line_length", "line_length.png", "longest line (characters)", r["config"]["max_line_length"], True),
            ("difficulty", "difficulty.png", "difficulty of training rows", None, False)):
        h = r["histograms"].get(key)
        if not h or not h["counts"]:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5))
        edges = np.asarray(h["edges"])
        ax.bar(edges[:-1], h["counts"], width=np.diff(edges), align="edge", color="tab:green", edgecolor="white")
        if log:
            ax.set_xscale("log")
        if threshold:
            ax.axvline(threshold, color="tab:red", linestyle="--", label="filter threshold")
            ax.legend()
        ax.set_xlabel(xlabel)
        ax.set_ylabel("count")
        save(fig, name)

    mix = r["mixing"].get("tasks", {})
    if len(mix) > 1:
        tasks = sorted(mix)
        x = np.arange(len(tasks))
        fig, ax = plt.subplots(figsize=(max(6, len(tasks) * 0.7), 4))
        ax.bar(x - 0.2, [mix[t]["available"] for t in tasks], 0.4, label="train rows built")
        ax.bar(x + 0.2, [mix[t]["rows"] for t in tasks], 0.4, label="after mixing")
        ax.set_xticks(x, tasks, rotation=45, ha="right")
        ax.set_ylabel("rows")
        ax.legend()
        save(fig, "task_mix.png")
    return made
