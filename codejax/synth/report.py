"""The synth job's report: report.json, report.md and plots/*.png (counts per stage and method, throughput)."""
from __future__ import annotations

import json
import os

from codejax.train.workdir import write_text


def _table(header, rows) -> list[str]:
    return (["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(map(str, r)) + " |" for r in rows] + [""])


def _markdown(r: dict, plots: list[str]) -> str:
    stages = r["stages"]
    lines = ["# Synthetic data report", "",
             f"Backend `{r['backend']}`; {r['candidates']} candidates, **{r['kept']} kept**."]
    if r["stopped_early"]:
        lines.append(f"Generation stopped early: {r['stopped_early']}.")
    lines += ["", "## Items left after each stage", ""]
    rows = []
    for m in r["methods"]:
        c = r["counts"].get(m, {})
        rows.append([m, r["generation"][m]["candidates"]] + [c.get(s, {}).get("out", 0) for s in stages])
    lines += _table(["method", "generated"] + stages, rows)
    lines += ["## Drop reasons", ""]
    drops = [(m, s, reason, n) for m in r["methods"] for s in stages
             for reason, n in sorted(r["counts"].get(m, {}).get(s, {}).get("dropped", {}).items())]
    drops += [(m, "in method", reason, n) for m in r["methods"]
              for reason, n in r["generation"][m]["eliminated_in_method"].items()]
    lines += _table(["method", "stage", "reason", "items"], drops) if drops else ["none", ""]
    lines += ["## Generation", ""]
    lines += _table(["method", "requests", "cached", "errors", "truncated", "completion tokens", "seconds",
                     "items/s", "tokens/s"],
                    [[m, g["requests"], g["cached_requests"], g["errors"], g["truncated"], g["completion_tokens"],
                      g["seconds"], g["items_per_s"], g["tokens_per_s"]] for m, g in r["generation"].items()])
    v = r["verification"]
    lines += ["## Verification", "",
              f"{v['passed']} of {v['verified']} distinct solutions passed their tests in the sandbox; their tests killed "
              f"{v['killed']} of {v['mutants']} mutants ({v['unmutated']} passing solutions had no site for a bug).",
              "", f"Budget: {r['budget']['used']} tokens used"
              + (f" of {r['budget']['max_total_tokens']}" if r["budget"]["max_total_tokens"] else "")
              + f"; cache: {r['cache']['hits']} hits, {r['cache']['misses']} misses.", ""]
    lines += [f"![{p}](plots/{p})" for p in plots]
    return "\n".join(lines) + "\n"


def _plots(r: dict, plot_dir: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(plot_dir, exist_ok=True)
    stages = ["generated"] + r["stages"]
    fig, ax = plt.subplots(figsize=(8, 4))
    for m in r["methods"]:
        c = r["counts"].get(m, {})
        ax.plot(stages, [r["generation"][m]["candidates"]] + [c.get(s, {}).get("out", 0) for s in r["stages"]],
                marker="o", label=m)
    ax.set_ylabel("items left")
    ax.set_title("Synthetic items through quality control")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(os.path.join(plot_dir, "funnel.png"), dpi=90, metadata={"Software": None})
    plt.close(fig)
    return ["funnel.png"]


def write_report(report: dict, out_dir: str, plots: bool = True) -> list[str]:
    made = _plots(report, os.path.join(out_dir, "plots")) if plots else []
    paths = [write_text(os.path.join(out_dir, "report.json"), json.dumps(report, indent=2, default=str) + "\n"),
             write_text(os.path.join(out_dir, "report.md"), _markdown(report, made))]
    return paths + [os.path.join(out_dir, "plots", p) for p in made]
