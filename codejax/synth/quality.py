"""Quality control of synthetic items: a table of stages, each dropping items with a counted reason.

    parse      an instruction, and a solution that parses as Python
    filters    length, language (the instruction is prose, the solution Python), refusal phrases
    dedup      exact (whitespace-normalised instruction) and MinHash near-duplicates (codejax.codedata.dedup)
    decontam   n-gram overlap with HumanEval / MBPP / the eval sets named (codejax.codedata.decontam)
    static     pyflakes errors (undefined names...) and bandit findings at synth.security_drop or worse
    execution  the solution passes its tests in the sandbox, and the tests catch mutants (verify.py)
    score      optional: a judge's score through the same teacher, or a `reward` job's score
    review     optional: a human review file's verdicts (review.py)

The cheap stages run first, so the sandbox only sees items that could be kept. Every stage
returns one reason per item ('' = kept); the engine counts them per method and writes the
dropped items, with their stage and reason, to rejected.jsonl.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from codejax.synth.methods import Context, Item, refusal_phrases
from codejax.synth.parse import parse_score, parses, strip_fences

# pyflakes messages that mean the code is broken, not merely untidy.
LINT_ERRORS = frozenset({"UndefinedName", "UndefinedLocal", "UndefinedExport", "ReturnOutsideFunction",
                         "YieldOutsideFunction", "ContinueOutsideLoop", "BreakOutsideLoop", "DuplicateArgument",
                         "TooManyExpressionsInStarUnpackingAssignment", "ImportStarUsage"})
SEVERITIES = ("low", "medium", "high")


@dataclasses.dataclass
class QCEnv:
    ctx: Context
    settings: object  # config.synth
    config: object  # the whole config (a reward model rebuilds its tokenizer from it)
    review: dict[str, str] | None = None  # item id -> accept | reject (review.py)


Stage = Callable[[list[Item], QCEnv], list[str]]


def _parse(items: list[Item], env: QCEnv) -> list[str]:
    out = []
    for it in items:
        if not it.instruction.strip():
            out.append("no_instruction")
        elif not it.solution.strip():
            out.append("no_solution")
        elif not parses(it.solution):
            out.append("syntax_error")
        else:
            out.append("")
    return out


def prose_fraction(text: str) -> float:
    """Letters and spaces over all characters of the text outside code fences."""
    text = strip_fences(text)
    return sum(c.isalpha() or c.isspace() for c in text) / max(len(text), 1)


def _filters(items: list[Item], env: QCEnv) -> list[str]:
    sc = env.settings
    phrases = refusal_phrases(sc)
    out = []
    for it in items:
        text = it.instruction.strip()
        low = (text + "\n" + it.solution).lower()
        if len(text) < sc.min_instruction_chars:
            out.append("too_short")
        elif len(text) > sc.max_instruction_chars:
            out.append("too_long")
        elif len(it.solution) > sc.max_solution_chars:
            out.append("solution_too_long")
        elif len(text.split()) < 3 or prose_fraction(text) < sc.min_prose_fraction:
            out.append("instruction_not_prose")
        elif any(p in low for p in phrases):
            out.append("refusal")
        else:
            out.append("")
    return out


def _dedup(items: list[Item], env: QCEnv) -> list[str]:
    from codejax.codedata.dedup import exact_hash, near_duplicate_clusters, signature

    out, seen = [""] * len(items), {}
    if not env.settings.dedup:
        return out
    for i, it in enumerate(items):
        h = exact_hash(it.instruction.lower())
        if h in seen:
            out[i] = "exact"
        else:
            seen[h] = i
    live = [i for i, r in enumerate(out) if not r]
    if env.settings.dedup_threshold < 1 and len(live) > 1:
        num_perm = 128
        # 3-token shingles: these texts are a few dozen tokens, where 5-grams (files) would miss near copies
        sigs = [signature(items[i].instruction + "\n" + items[i].solution, num_perm, 3) for i in live]
        for cluster in near_duplicate_clusters(live, sigs, env.settings.dedup_threshold, num_perm):
            for j in cluster[1:]:  # the first item (in method order) stays
                out[live[j]] = "near"
    return out


def _decontam(items: list[Item], env: QCEnv) -> list[str]:
    from codejax.codedata.decontam import contaminated, eval_ngrams

    sets, n = env.settings.decontam_sets, env.settings.decontam_ngram
    if not sets.strip():
        return [""] * len(items)
    grams = eval_ngrams(sets, n)
    return ["contaminated" if contaminated("\n".join((it.instruction, it.solution, it.tests)), grams, n) else ""
            for it in items]


def _static(items: list[Item], env: QCEnv) -> list[str]:
    from codejax.evaluation.quality import analyze

    sc = env.settings
    if not sc.lint and not sc.security_drop:
        return [""] * len(items)
    report = analyze([it.solution for it in items], security=bool(sc.security_drop))
    floor = SEVERITIES.index(sc.security_drop) if sc.security_drop else len(SEVERITIES)
    out = []
    for sample in report.samples:
        errors = sorted(k for k in sample.get("lint_kinds", {}) if k in LINT_ERRORS)
        severe = sorted(s for s in sample.get("security_severity", {}) if SEVERITIES.index(s) >= floor)
        if not sample["syntax_ok"]:
            out.append("syntax_error")
        elif sc.lint and errors:
            out.append(f"lint:{errors[0]}")
        elif severe:
            out.append(f"security:{sample.get('security_worst', severe[-1])}")
        else:
            out.append("")
    return out


def _execution(items: list[Item], env: QCEnv) -> list[str]:
    if not env.settings.verify:
        return [""] * len(items)
    return [v.reason for v in env.ctx.verify(items)]


def _score(items: list[Item], env: QCEnv) -> list[str]:
    sc = env.settings
    out = [""] * len(items)
    if sc.judge:
        prompts = [env.ctx.prompts.render("judge", instruction=it.instruction, solution=it.solution) for it in items]
        for i, c in enumerate(env.ctx.ask("judge", prompts, max_tokens=16, temperature=0.0)):
            score = parse_score(c.text)
            items[i].origin["judge_score"] = score
            if score is None:
                out[i] = "judge_unparsed"
            elif score < sc.judge_min_score:
                out[i] = "judge_low"
    if sc.reward_model:
        scores = reward_scores(env.config, sc.reward_model, items)
        for i, s in enumerate(scores):
            items[i].origin["reward"] = round(s, 4)
            if not out[i] and s < sc.reward_min:
                out[i] = "reward_low"
    return out


def reward_scores(config, run_dir: str, items: list[Item]) -> list[float]:
    """A `reward` job's score of each (instruction, ```python solution```) in the Alpaca layout."""
    from codejax.data.formats import ALPACA_PROMPT
    from codejax.rl.reward_model import reward_model_fn
    from codejax.setup import load_tokenizer, with_run_config
    from codejax.train.checkpoint import find_checkpoint

    _, _, run = find_checkpoint(run_dir, "synth.reward_model")
    tokenizer = load_tokenizer(with_run_config(config, run))
    score = reward_model_fn(config, tokenizer, run_dir)
    prompts = [ALPACA_PROMPT.format(instruction=it.instruction, input="") for it in items]
    return [float(s) for s in score(prompts, [answer_text(it) for it in items])]


def _review(items: list[Item], env: QCEnv) -> list[str]:
    if env.review is None:
        return [""] * len(items)
    out = []
    for it in items:
        verdict = env.review.get(it.id, "")
        if verdict == "reject":
            out.append("rejected")
        elif not verdict and env.settings.review_required:
            out.append("unreviewed")
        else:
            out.append("")
    return out


STAGES: dict[str, Stage] = {"parse": _parse, "filters": _filters, "dedup": _dedup, "decontam": _decontam,
                            "static": _static, "execution": _execution, "score": _score, "review": _review}


def answer_text(item: Item) -> str:
    """The assistant's answer a training row holds: the solution in a Python block."""
    return f"```python\n{item.solution.strip()}\n```"


def run_quality(items: list[Item], env: QCEnv) -> tuple[list[Item], list[tuple[Item, str, str]], dict]:
    """(kept items, dropped (item, stage, reason), counts[method][stage] = {in, out, dropped: {reason: n}})."""
    methods = list(dict.fromkeys(it.method for it in items))
    counts: dict[str, dict] = {m: {} for m in methods}
    dropped: list[tuple[Item, str, str]] = []
    for stage, fn in STAGES.items():
        reasons = fn(items, env) if items else []
        for m in methods:
            counts[m][stage] = {"in": sum(it.method == m for it in items), "out": 0, "dropped": {}}
        keep = []
        for it, reason in zip(items, reasons):
            c = counts[it.method][stage]
            if reason:
                c["dropped"][reason] = c["dropped"].get(reason, 0) + 1
                dropped.append((it, stage, reason))
            else:
                c["out"] += 1
                keep.append(it)
        items = keep
    return items, dropped, counts
