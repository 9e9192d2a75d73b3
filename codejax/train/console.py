"""What a run prints for its user: the start banner, the data table, the truncation warning, the dry-run plan.

The CLI (codejax/main.py) keeps Orbax, absl and JAX at WARNING unless `--verbosity=1`, so
the console shows these lines, one progress bar per stage and warnings. They are written with
tqdm.write (so they never break a progress bar) on process 0 only.
"""
from __future__ import annotations

import logging
import math
import sys
from typing import Any

import jax
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

# Warn when more than this fraction of the examples (pairs) lost tokens to seq_len or were dropped.
TRUNCATION_WARN_FRACTION = 0.05


def say(text: str) -> None:
    if jax.process_index() == 0:
        tqdm.write(text, file=sys.stderr)


def human(n: float) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def bytes_text(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def tokens_per_step(config) -> tuple[str, int]:
    """(what is counted, how many) per optimizer step, for the banner and the plan."""
    if config.job in ("grpo", "ppo"):
        rc = config.rl
        return "rollouts", rc.prompts_per_step * rc.group_size
    return "tokens", config.data.batch_size * config.data.seq_len


def mesh_text(parallel) -> str:
    if parallel is None:
        return f"{jax.device_count()} x {jax.devices()[0].platform}"
    shape = ", ".join(f"{k}={v}" for k, v in parallel.mesh.shape.items())
    return f"{jax.device_count()} x {jax.devices()[0].platform} (mesh {shape})"


def banner(config, workdir: str, total_params: int, trainable_params: int, parallel, start_step: int) -> None:
    what, count = tokens_per_step(config)
    resumed = f", resuming at step {start_step}" if start_step else ""
    say(f"codejax {config.job}: {human(total_params)} parameters ({human(trainable_params)} trainable) | "
        f"{mesh_text(parallel)} | {human(count)} {what}/step | {config.train.steps} steps{resumed} | "
        f"workdir {workdir}")


def data_table(stats: dict[str, Any], config) -> None:
    """The data statistics once, as a short table, and the truncation warning."""
    rows = [(k, v) for k, v in stats.items() if isinstance(v, (int, float)) and not k.startswith("eval_")]
    if not rows:
        return
    width = max(len(k) for k, _ in rows)
    say("data:\n" + "\n".join(f"  {k:<{width}}  {v:,}" for k, v in rows))
    warn_truncation(stats, config.data.seq_len)


def warn_truncation(stats: dict[str, Any], seq_len: int) -> str | None:
    """A warning when many examples (or pairs) lost tokens or were dropped: the percentage, the longest
    prompt and a suggested data.seq_len. Returns the message (None under TRUNCATION_WARN_FRACTION)."""
    if "pairs" in stats:  # preference data (codejax/data/pairs.py)
        unit, kept, truncated = "pairs", stats["pairs"], stats.get("pairs_truncated", 0)
        dropped = {"with no completion left": stats.get("pairs_dropped_no_completion", 0)}
    else:
        unit, kept, truncated = "examples", stats.get("examples", 0), stats.get("examples_truncated", 0)
        dropped = {"as too long": stats.get("examples_dropped_overlength", 0),
                   "with nothing left to train on": stats.get("examples_dropped_no_loss", 0)}
    total = kept + sum(dropped.values())
    # Truncated rows may also be among the dropped ones: count each row at most once.
    lost = min(total, max(truncated, 0) + (0 if unit == "examples" and truncated else sum(dropped.values())))
    if not total or lost / total <= TRUNCATION_WARN_FRACTION:
        return None
    suggest = stats.get("seq_len_p99")
    suggestion = (f"data.seq_len={2 ** math.ceil(math.log2(suggest + 1))} fits 99% of them whole"
                  if suggest and suggest > seq_len else "raise data.seq_len")
    prompt = f"; the longest prompt is {stats['longest_prompt']} tokens" if stats.get("longest_prompt") else ""
    parts = [f"{truncated} truncated"] + [f"{n} dropped {why}" for why, n in dropped.items() if n]
    side = ", or set data.truncation_side=left to keep the ends" if unit == "examples" else \
        " (prompts keep their last preference.max_prompt_len tokens)"
    message = (f"{100 * lost / total:.0f}% of the {total} {unit} do not fit data.seq_len={seq_len}: "
               f"{', '.join(parts)}{prompt}. {suggestion}{side}")
    log.warning("%s", message)
    return message


# ----------------------------------------------------------------------------- --dry_run
