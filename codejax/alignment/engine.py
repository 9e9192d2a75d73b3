"""The constitutional loop: sample -> (critique -> revise) x rounds -> SFT rows, preference pairs, traces.

    summary = run_constitutional(config, workdir)   # what job `constitutional` runs

For each task (codejax/alignment/builders.py) the policy replies once. Then, `cai.rounds` times,
each task gets `cai.principles_per_round` principles drawn at random (0 = all, in order); for
each, the automated checks run on the current reply (codejax/alignment/checks.py: bandit, and the
task's tests in the sandbox), the critic critiques with their findings in hand, and revises. A
revision that adds a bandit finding, breaks tests that passed, or changes nothing is rejected and
the reply stays. With cai.rlaif, the policy also replies twice more at cai.rlaif_temperature and the
critic judges the two by a random principle (RLAIF preference labels).

Outputs (built in WORKDIR/.staging and swapped in as one set):
- `sft-0000i-of-0000N.jsonl`: chat rows `{"messages": [... the conversation, the final reply]}` that
  configs/sft.py reads with data.format=chat. A final reply the rule checks still flag (a harmful
  request still answered, code that still fails its tests or has a finding) is left out and counted.
- `preference-0000i-of-0000N.jsonl`: `{"prompt": [messages], "chosen": [reply], "rejected": [reply]}`
  (TRL's conversational layout, which `dpo` and `reward` read): final revision > original
  (source=revision), the judge's pick (source=rlaif), bandit-clean rewrite > insecure code
  (source=secure_rewrite). cai.redteam_ratio fixes the red-team share of both files.
- `traces-0000i-of-0000N.jsonl`: per task the original, the final reply, and `critiques` and
  `revisions` lists (round, principle, text, findings; accepted or why not).
- `report.md` / `report.json`: counts per builder and kind, how often a revision changed the
  answer, the refusal / over-refusal / insecure-code rates of originals against final replies,
  prompts/s per round, examples. `summary.json`, `config.json`.
Every model call goes through the synth engine's completion cache (WORKDIR/cache), so a killed run
resumes where it stopped and a finished one reruns without sampling.
"""
from __future__ import annotations

import collections
import glob
import json
import logging
import os
import random
import time

from tqdm.auto import tqdm

from codejax.alignment.builders import BUILDERS, BuildContext, base_tasks, build_tasks, secure_pairs
from codejax.alignment.checks import Findings, check_replies, regression
from codejax.alignment.constitution import load_constitution
from codejax.alignment.critics import Job, JudgeJob, ModelCritic, RulesCritic
from codejax.alignment.rules import is_harmful
from codejax.alignment.tasks import Task
from codejax.codedata.output import finish_swap, staging_dir, swap_in, write_shards
from codejax.evaluation.safety import SEVERITIES, is_refusal
from codejax.synth.backends import CachedBackend, Request, TokenBudget, local_backend, make_backend
from codejax.synth.methods import Prompts
from codejax.train.workdir import write_config, write_json, write_text

log = logging.getLogger(__name__)
PROMPTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prompts")
CRITICS = ("rules", "teacher", "self")


def check_cai_config(cc) -> list[str]:
    """Fail fast, naming the field; returns the builders."""
    names = [b.strip() for b in cc.builders.split(",") if b.strip()]
    unknown = [b for b in names if b not in BUILDERS]
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(f"cai.builders={cc.builders!r}: name each of {', '.join(BUILDERS)} at most once"
                         + (f" (unknown: {unknown})" if unknown else ""))
    choices = {"critic": CRITICS, "redteam_source": ("templates", "teacher"), "redteam_keep": ("complied", "all"),
               "security_severity": SEVERITIES, "sft_rows": ("all", "changed")}
    for field, allowed in choices.items():
        if getattr(cc, field) not in allowed:
            raise ValueError(f"cai.{field}={getattr(cc, field)!r}; expected one of {', '.join(allowed)}")
    for field in ("rounds", "max_new_tokens", "batch_size", "critic_max_tokens", "shard_rows"):
        if getattr(cc, field) < 1:
            raise ValueError(f"cai.{field}={getattr(cc, field)}; must be >= 1")
    for field in ("principles_per_round", "items_per_builder", "max_total_tokens", "examples", "max_snippets"):
        if getattr(cc, field) < 0:
            raise ValueError(f"cai.{field}={getattr(cc, field)}; must be >= 0")
    if not 0 <= cc.redteam_ratio < 1:
        raise ValueError(f"cai.redteam_ratio={cc.redteam_ratio}; must be in [0, 1)")
    if cc.temperature < 0 or cc.rlaif_temperature < 0 or cc.critic_temperature < 0 or not 0 < cc.top_p <= 1:
        raise ValueError("cai.temperature, cai.rlaif_temperature and cai.critic_temperature must be >= 0, "
                         "cai.top_p in (0, 1]")
    if cc.sandbox_timeout_s <= 0:
        raise ValueError(f"cai.sandbox_timeout_s={cc.sandbox_timeout_s}; must be > 0")
    return names


class _Policy:
    """The policy's replies through the cache, in batches of cai.batch_size, with a progress bar."""

    def __init__(self, backend: CachedBackend, cc, seed: int, progress: bool):
        self.backend, self.cc, self.seed, self.progress = backend, cc, seed, progress
        self.tokens = self.requests = 0

    def reply(self, method: str, tasks: list[Task], temperature: float, sample: int = 0) -> list:
        cc, out = self.cc, []
        requests = [Request(messages=t.messages, max_tokens=cc.max_new_tokens, temperature=temperature,
                            top_p=cc.top_p, seed=self.seed + sample) for t in tasks]
        bar = tqdm(total=len(requests), desc=method, unit="reply", disable=not self.progress, dynamic_ncols=True)
        for first in range(0, len(requests), cc.batch_size):
            got = self.backend.complete(method, requests[first:first + cc.batch_size],
                                        [sample] * len(requests[first:first + cc.batch_size]))
            out += got
            self.requests += len(got)
            self.tokens += sum(c.completion_tokens for c in got)
            bar.update(len(got))
        bar.close()
        return out


def _rates(tasks: list[Task], replies: list[str], findings: list[Findings]) -> dict:
    """Refusal rate on harmful tasks, over-refusal on the others, insecure code on code tasks."""
    harm = [is_refusal(r) for t, r in zip(tasks, replies) if is_harmful(t)]
    benign = [is_refusal(r) for t, r in zip(tasks, replies) if not is_harmful(t)]
    code = [bool(f.security) for t, f in zip(tasks, findings) if t.kind == "code"]
    tested = [f.tests_passed for t, f in zip(tasks, findings) if t.tests.strip()]
    mean = lambda xs: round(sum(xs) / len(xs), 4) if xs else None  # noqa: E731
    return {"refusal_rate_harmful": mean(harm), "over_refusal_rate_benign": mean(benign),
            "insecure_code_rate": mean(code), "tests_pass_rate": mean(tested)}


def mix_redteam(rows: list[dict], ratio: float, rng: random.Random) -> tuple[list[dict], dict]:
    """Rows with red-team rows at `ratio` of the total: sampled down, or repeated up (counted)."""
    red = [r for r in rows if r.get("source") == "redteam"]
    other = [r for r in rows if r.get("source") != "redteam"]
    info = {"redteam_rows": len(red), "other_rows": len(other), "repeated": 0, "dropped": 0}
    if ratio and red and other:
        target = round(ratio * len(other) / (1 - ratio))
        if target <= len(red):
            info["dropped"] = len(red) - target
            red = rng.sample(red, target)
        else:
            info["repeated"] = target - len(red)
            red = red + [rng.choice(red) for _ in range(target - len(red))]
        rows = other + red
        rng.shuffle(rows)
    info["redteam_share"] = round(len(red) / len(rows), 4) if rows else 0.0
    return rows, info


def _revise(live: list[Task], current: dict, traces: dict, critic, principles, cc, check, rng, progress):
    """cai.rounds rounds of critique -> revision over the live tasks, in place on `current` and `traces`;
    returns (per-round timings, critiques per principle, revision outcomes)."""
    per_round = cc.principles_per_round or len(principles)
    rounds, fired, outcome = [], collections.Counter(), collections.Counter()
    bar = tqdm(total=cc.rounds * per_round * len(live), desc="critique", unit="job", disable=not progress,
               dynamic_ncols=True)
    for r in range(cc.rounds):
        t_round = time.monotonic()
        picks = {t.id: (principles if not cc.principles_per_round else
                        rng.sample(principles, min(per_round, len(principles)))) for t in live}
        for slot in range(per_round):  # one principle per task at a time: each revises the latest reply
            jobs_tasks = [t for t in live if slot < len(picks[t.id])]
            findings = check([current[t.id] for t in jobs_tasks], [t.tests for t in jobs_tasks])
            jobs = [Job(t, current[t.id], picks[t.id][slot], f) for t, f in zip(jobs_tasks, findings)]
            critiques = critic.critique(jobs)
            revisions = critic.revise(jobs, critiques)  # per job, candidate revisions in preference order
            proposed = [(j, c, revs) for j, c, revs in zip(jobs, critiques, revisions) if c]
            after = iter(check([rev for _, _, revs in proposed for rev in revs],
                               [j.task.tests for j, _, revs in proposed for _ in revs]))
            for j, c, revs in proposed:
                name = j.principle.name
                fired[name] += 1
                traces[j.task.id]["critiques"].append({"round": r, "principle": name, "text": c,
                                                       "findings": j.findings.text()})
                why, rev, f_after = "no_revision", "", None
                for candidate in revs:  # the first candidate that passes the checks stands
                    f = next(after)  # consumed for every candidate, so the iterator stays aligned
                    if not why:
                        continue
                    rev, f_after = candidate, f
                    why = "unchanged" if candidate.strip() in ("", j.reply.strip()) else regression(j.findings, f)
                outcome[why or "accepted"] += 1
                traces[j.task.id]["revisions"].append({"round": r, "principle": name, "text": rev,
                                                       "accepted": not why, "rejected_because": why,
                                                       "candidates": len(revs),
                                                       "findings": f_after.text() if f_after else ""})
                if not why:
                    current[j.task.id] = rev
            bar.update(len(jobs))
        seconds = time.monotonic() - t_round
        rounds.append({"round": r, "seconds": round(seconds, 3),
                       "prompts_per_s": round(len(live) / max(seconds, 1e-9), 3)})
    bar.close()
    return rounds, fired, outcome


def _rlaif(live: list[Task], policy: _Policy, critic, principles, cc, check, rng, traces: dict,
           prefs: list[dict]) -> collections.Counter:
    """Two more replies per task, judged by a random principle; the judged pairs are appended to `prefs`."""
    counts = collections.Counter()
    a = policy.reply("cai_rlaif", live, cc.rlaif_temperature, sample=1)
    b = policy.reply("cai_rlaif", live, cc.rlaif_temperature, sample=2)
    fa = check([c.text for c in a], [t.tests for t in live])
    fb = check([c.text for c in b], [t.tests for t in live])
    jobs = [JudgeJob(t, rng.choice(principles), (ca.text, cb.text), (x, y)) for t, ca, cb, x, y in zip(live, a, b, fa, fb)]
    for j, ca, cb, v in zip(jobs, a, b, critic.judge(jobs, principles)):
        if ca.error or cb.error or not ca.text.strip() or not cb.text.strip() or ca.text.strip() == cb.text.strip():
            counts["same_empty_or_error"] += 1
        elif v is None:
            counts["no_preference"] += 1
        else:
            counts["pairs"] += 1
            traces[j.task.id]["rlaif"] = {"principle": j.principle.name, "replies": list(j.replies), "winner": v}
            prefs.append({"prompt": j.task.chat(), "chosen": [{"role": "assistant", "content": j.replies[v]}],
                          "rejected": [{"role": "assistant", "content": j.replies[1 - v]}], "id": j.task.id,
                          "kind": j.task.kind, "category": j.task.category, "source": j.task.source,
                          "source_pair": "rlaif", "principle": j.principle.name})
    return counts


def run_constitutional(config, workdir: str, progress: bool | None = None, policy_backend=None,
                       teacher_backend=None) -> dict:
    """The job; `policy_backend` / `teacher_backend` (any `complete(requests) -> completions` object,
    codejax/synth/backends.py) replace the ones the config describes."""
    start = time.monotonic()
    cc = config.cai
    builder_names = check_cai_config(cc)
    if policy_backend is None and not cc.policy_path and not config.model.hf_path and config.model.preset != "tiny":
        raise ValueError("cai.policy_path is empty and the model section describes a random full-size model: set "
                         "cai.policy_path (an HF model directory or a training workdir) or model.hf_path")
    constitution = load_constitution(cc.constitution_path)
    if cc.critic == "rules" and not any(p.check for p in constitution.principles):
        raise ValueError(f"{constitution.path}: no principle has a `check`, so cai.critic=rules cannot critique "
                         "anything: add checks or use cai.critic=teacher")
    prompts = Prompts(cc.prompts_dir, base_dir=PROMPTS_DIR, field="cai.prompts_dir")
    base = base_tasks(cc.prompts_path)
    progress = config.train.progress_bar if progress is None else progress
    os.makedirs(workdir, exist_ok=True)
    finish_swap(workdir)
    budget = TokenBudget(cc.max_total_tokens)
    cache = os.path.join(workdir, "cache")
    policy_backend = CachedBackend(policy_backend or local_backend(config, cc.policy_path, cc.policy_adapters,
                                                                   cc.batch_size, "cai.policy_path"),
                                   os.path.join(cache, "policy.jsonl"), budget)
    policy = _Policy(policy_backend, cc, config.seed, progress)
    teacher = None
    if cc.critic != "rules":
        backend = policy_backend if cc.critic == "self" else CachedBackend(
            teacher_backend or make_backend(config), os.path.join(cache, "teacher.jsonl"), budget)
        teacher = ModelCritic(backend, prompts, cc.critic_max_tokens, cc.critic_temperature, backend.name)
    critic = teacher or RulesCritic()
    gate = RulesCritic()  # the automated gate on final replies, whatever the critic
    check = lambda replies, tests: check_replies(replies, tests, severity=cc.security_severity,  # noqa: E731
                                                 timeout_s=cc.sandbox_timeout_s, workers=cc.sandbox_workers or None)

    ctx = BuildContext(cc, config.seed, base, teacher.ask if teacher else None, prompts.render)
    tasks, built = build_tasks(ctx, builder_names)
    log.info("constitutional: %d tasks from %s", len(tasks), built)

    t0 = time.monotonic()
    first = policy.reply("cai_response", tasks, cc.temperature)
    sample_s = time.monotonic() - t0
    counts = collections.Counter()
    live: list[Task] = []
    current: dict[str, str] = {}
    for task, c in zip(tasks, first):
        if c.error:
            counts["policy_error"] += 1
        elif task.source == "redteam" and cc.redteam_keep == "complied" and is_refusal(c.text):
            counts["redteam_refused"] += 1  # the policy already refuses it: nothing to teach
        else:
            live.append(task)
            current[task.id] = c.text
    original = dict(current)
    redteam_complied = sum(t.source == "redteam" for t in live)
    traces = {t.id: {"critiques": [], "revisions": []} for t in live}
    principles = list(constitution.principles)
    rounds, fired, outcome = _revise(live, current, traces, critic, principles, cc, check,
                                     random.Random(f"{config.seed}:principles"), progress)

    final_findings = check([current[t.id] for t in live], [t.tests for t in live])
    orig_findings = check([original[t.id] for t in live], [t.tests for t in live])
    sft, prefs, unresolved = [], [], collections.Counter()
    for t, f_final in zip(live, final_findings):
        final, changed = current[t.id], current[t.id].strip() != original[t.id].strip()
        left = [p.name for p in principles if p.check and gate.violations(t, final, f_final, [p])]
        meta = {"id": t.id, "kind": t.kind, "category": t.category, "source": t.source}
        traces[t.id].update(meta, prompt=t.chat(), original=original[t.id], final=final, changed=changed,
                            unresolved=left, final_checks=f_final.text())
        if left:
            unresolved.update(left)
            continue
        if not final.strip():
            counts["empty_final_reply"] += 1  # nothing to learn, and no trainer accepts an empty turn
            continue
        if cc.sft_rows == "all" or changed:
            sft.append({"messages": t.chat() + [{"role": "assistant", "content": final}], **meta, "changed": changed})
        if changed and not original[t.id].strip():
            counts["pair_empty_original"] += 1  # an empty reply is no `rejected` a trainer accepts
        elif changed:
            prefs.append({"prompt": t.chat(), "chosen": [{"role": "assistant", "content": final}],
                          "rejected": [{"role": "assistant", "content": original[t.id]}], **meta, "source_pair":
                          "revision"})

    rlaif = collections.Counter()
    if cc.rlaif and live:
        rlaif = _rlaif(live, policy, critic, principles, cc, check, random.Random(f"{config.seed}:rlaif"), traces,
                       prefs)

    secure = {}
    if cc.secure_pairs:
        snippets = []
        if cc.insecure_code_path:
            from codejax.synth.engine import load_snippets
            snippets, secure["snippets_skipped"] = load_snippets(cc.insecure_code_path, cc.max_snippets,
                                                                 cc.max_snippet_chars)
        pairs, secure_counts = secure_pairs(tasks, snippets, check)
        secure.update(secure_counts)
        prefs += [{**p, "source": "secure_rewrite", "source_pair": "secure_rewrite"} for p in pairs]

    mix_rng = random.Random(f"{config.seed}:mix")
    sft, sft_mix = mix_redteam(sft, cc.redteam_ratio, mix_rng)
    prefs, pref_mix = mix_redteam(prefs, cc.redteam_ratio, mix_rng)

    staging = staging_dir(workdir)
    files = {"sft": write_shards(sft, staging, "sft", "jsonl", cc.shard_rows),
             "preference": write_shards(prefs, staging, "preference", "jsonl", cc.shard_rows),
             "traces": write_shards([traces[t.id] for t in live], staging, "traces", "jsonl", cc.shard_rows)}
    by_kind = collections.defaultdict(lambda: [0, 0])
    for t in live:
        by_kind[t.kind][0] += 1
        by_kind[t.kind][1] += traces[t.id]["changed"]
    report = {
        "constitution": {"name": constitution.name, "path": constitution.path,
                         "principles": [p.name for p in principles]},
        "critic": critic.name, "policy": policy_backend.name, "builders": built, "tasks": len(tasks),
        "live": len(live), "counts": dict(counts), "redteam_complied": redteam_complied,
        "changed": sum(traces[t.id]["changed"] for t in live),
        "changed_rate": round(sum(traces[t.id]["changed"] for t in live) / max(len(live), 1), 4),
        "changed_by_kind": {k: {"tasks": n, "changed": c} for k, (n, c) in sorted(by_kind.items())},
        "critiques_by_principle": dict(fired.most_common()), "revision_outcomes": dict(outcome.most_common()),
        "unresolved_by_principle": dict(unresolved.most_common()),
        "rates": {"original": _rates(live, [original[t.id] for t in live], orig_findings),
                  "final": _rates(live, [current[t.id] for t in live], final_findings)},
        "outputs": {"sft_rows": len(sft), "preference_pairs": len(prefs),
                    "pairs_by_source": dict(collections.Counter(p["source_pair"] for p in prefs)),
                    "sft_mix": sft_mix, "preference_mix": pref_mix},
        "rlaif": dict(rlaif), "secure_pairs": secure, "critic_errors": dict(getattr(critic, "errors", {})),
        "rounds": rounds, "sampling": {"seconds": round(sample_s, 3), "requests": policy.requests,
                                       "completion_tokens": policy.tokens},
        "cache": {"hits": policy_backend.hits + (teacher.backend.hits if teacher and cc.critic == "teacher" else 0),
                  "misses": policy_backend.misses + (teacher.backend.misses if teacher and cc.critic == "teacher"
                                                     else 0)},
        "budget": {"max_total_tokens": budget.cap, "used": budget.used, "stopped": budget.spent},
        "examples": [traces[t.id] for t in live if traces[t.id]["changed"]][:cc.examples],
        "seconds": round(time.monotonic() - start, 2),
    }
    write_json(os.path.join(staging, "report.json"), report)
    write_text(os.path.join(staging, "report.md"), report_markdown(report))
    summary = {"tasks": len(tasks), "live": len(live), "sft_rows": len(sft), "preference_pairs": len(prefs),
               "changed_rate": report["changed_rate"], "rates": report["rates"], "files": files, "out_dir": workdir,
               "seconds": report["seconds"]}
    write_json(os.path.join(staging, "summary.json"), summary)
    write_config(config, staging)
    swap_in(workdir)
    if not sft:
        log.warning("constitutional: no SFT rows (%d tasks critiqued; skipped: %s; left out by the checks: %s): "
                    "see %s", len(live), dict(counts), dict(unresolved), os.path.join(workdir, "report.md"))
    log.info("constitutional: %d tasks, %.0f%% changed -> %d SFT rows, %d preference pairs in %s", len(live),
             100 * report["changed_rate"], len(sft), len(prefs), workdir)
    return summary


def _table(header, rows) -> list[str]:
    return (["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(map(str, r)) + " |" for r in rows] + [""])


def _clip(text: str, n: int = 400) -> str:
    text = text.strip()
    return text if len(text) <= n else text[:n] + " …"


def report_markdown(r: dict) -> str:
    lines = ["# Constitutional AI report", "",
             f"Constitution `{r['constitution']['name']}` ({len(r['constitution']['principles'])} principles), "
             f"critic `{r['critic']}`, policy `{r['policy']}`.", "",
             f"{r['tasks']} tasks built, {r['live']} critiqued; a revision changed **{r['changed']}** answers "
             f"({100 * r['changed_rate']:.1f}%). Outputs: {r['outputs']['sft_rows']} SFT rows, "
             f"{r['outputs']['preference_pairs']} preference pairs {r['outputs']['pairs_by_source']}.", ""]
    if r["critic_errors"]:
        lines += [f"Critic requests that failed (too long for the model, or the endpoint): {r['critic_errors']}; "
                  "their critiques count as no problem found.", ""]
    if r["budget"]["stopped"]:
        lines += [f"Sampling stopped early: {r['budget']['stopped']}.", ""]
    lines += ["## Tasks", ""] + _table(["builder", "tasks"], sorted(r["builders"].items()))
    lines += _table(["kind", "tasks", "changed"], [[k, v["tasks"], v["changed"]] for k, v in r["changed_by_kind"].items()])
    if r["counts"]:
        lines += ["Skipped (policy errors, red-team requests already refused, empty replies): " + ", ".join(f"{k} {v}" for k, v in sorted(r["counts"].items())), ""]
    lines += [f"Red-team requests the policy complied with (kept): {r['redteam_complied']}.", ""]
    lines += ["## Rates, original replies against final replies", ""]
    names = ["refusal_rate_harmful", "over_refusal_rate_benign", "insecure_code_rate", "tests_pass_rate"]
    lines += _table(["", *names], [[k, *[r["rates"][k][n] for n in names]] for k in ("original", "final")])
    lines += ["## Critiques and revisions", ""]
    lines += _table(["principle", "critiques"], r["critiques_by_principle"].items()) if r["critiques_by_principle"] \
        else ["no principle was found violated", ""]
    lines += _table(["revision outcome", "count"], r["revision_outcomes"].items()) if r["revision_outcomes"] else []
    if r["unresolved_by_principle"]:
        lines += ["Final replies left out of the SFT rows (the rule checks still flag them): "
                  + ", ".join(f"{k} {v}" for k, v in r["unresolved_by_principle"].items()), ""]
    lines += ["## Throughput", ""] + _table(["round", "seconds", "prompts/s"],
                                            [[x["round"], x["seconds"], x["prompts_per_s"]] for x in r["rounds"]])
    lines += ["## Examples", ""]
    for ex in r["examples"]:
        lines += [f"### {ex['kind']} / {ex['source']} `{ex['id']}`", "", "**Prompt:** " + _clip(ex["prompt"][-1]["content"]),
                  "", "**Original:**", "", "```text", _clip(ex["original"]), "```", ""]
        for c in ex["critiques"]:
            lines += [f"**Critique ({c['principle']}, round {c['round']}):** {_clip(c['text'])}", ""]
        lines += ["**Final:**", "", "```text", _clip(ex["final"]), "```", ""]
    if not r["examples"]:
        lines += ["no revision changed an answer", ""]
    return "\n".join(lines) + "\n"


def output_files(workdir: str, kind: str) -> list[str]:
    """The sft / preference / traces shards of a finished run."""
    return sorted(glob.glob(os.path.join(workdir, f"{kind}-*.jsonl")))


def read_rows(workdir: str, kind: str) -> list[dict]:
    rows = []
    for path in output_files(workdir, kind):
        with open(path, encoding="utf-8") as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows
