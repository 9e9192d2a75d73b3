"""Critics: who critiques, revises and judges in the constitutional loop (`cai.critic`).

    critic = RulesCritic()                                  # cai.critic=rules: scripted (CPU, tests)
    critic = ModelCritic(cached_backend, prompts, settings) # cai.critic=teacher | self: a model
    critiques = critic.critique(jobs)                       # '' = the principle holds (or the request failed:
                                                            # ModelCritic.errors counts those)
    revisions = critic.revise(jobs, critiques)              # candidates per job, best first ([] = none)
    winners = critic.judge(pairs)                           # 0 | 1 | None (no preference)

A job is (task, reply, principle, findings): the automated checks' findings (bandit, tests) go
to the critique of both critics. The model critic renders codejax/alignment/prompts/*.txt
(cai.prompts_dir overrides them by name) and asks through the synth engine's cached backends, so
a rerun finds every critique in WORKDIR/cache. Its judge asks twice with the replies swapped and
keeps only a consistent answer (position bias is the usual failure of LLM judges).
"""
from __future__ import annotations

import re
from typing import NamedTuple, Sequence

from codejax.alignment.checks import Findings
from codejax.alignment.constitution import Principle
from codejax.alignment.rules import RULES
from codejax.alignment.tasks import Task

_NO_PROBLEMS = re.compile(r"^\W*no (problems?|issues?)\b", re.I)


class Job(NamedTuple):
    task: Task
    reply: str
    principle: Principle
    findings: Findings


class JudgeJob(NamedTuple):
    task: Task
    principle: Principle
    replies: tuple[str, str]
    findings: tuple[Findings, Findings]


def render_conversation(task: Task, reply: str | None = None) -> str:
    turns = [f"{role.capitalize()}: {content}" for role, content in task.messages]
    if reply is not None:
        turns.append(f"Assistant: {reply}")
    return "\n\n".join(turns)


class RulesCritic:
    """The scripted critic (codejax/alignment/rules.py); principles without a `check` never fire."""

    name = "rules"

    def critique(self, jobs: Sequence[Job]) -> list[str]:
        return [RULES[j.principle.check].detect(j.task, j.reply, j.findings, j.principle) if j.principle.check
                else "" for j in jobs]

    def revise(self, jobs: Sequence[Job], critiques: Sequence[str]) -> list[list[str]]:
        out = []
        for j, c in zip(jobs, critiques):
            got = RULES[j.principle.check].revise(j.task, j.reply, j.findings, j.principle) if c else None
            out.append([] if got is None else [got] if isinstance(got, str) else [x for x in got if x])
        return out

    def violations(self, task: Task, reply: str, findings: Findings, principles: Sequence[Principle]) -> int:
        return sum(bool(RULES[p.check].detect(task, reply, findings, p)) for p in principles if p.check)

    def judge(self, jobs: Sequence[JudgeJob], principles: Sequence[Principle] = ()) -> list[int | None]:
        """The reply that violates the job's principle less; ties broken by all principles' checks."""
        out = []
        for j in jobs:
            scores = [(self.violations(j.task, r, f, [j.principle]), self.violations(j.task, r, f, principles))
                      for r, f in zip(j.replies, j.findings)]
            out.append(None if scores[0] == scores[1] else int(scores[1] < scores[0]))
        return out


class ModelCritic:
    """A model critic: the teacher backend (or the policy itself, cai.critic=self) prompted per principle."""

    def __init__(self, backend, prompts, max_tokens: int, temperature: float, name: str):
        self.backend, self.prompts, self.name = backend, prompts, name
        self.max_tokens, self.temperature = max_tokens, temperature
        self.errors: dict[str, int] = {}  # method -> failed requests (counted in the report, never silent)

    def ask(self, method: str, texts: list[str]) -> list[str]:
        """The model's replies to `texts` (user turns) through the cache; a failed request is '' and counted."""
        from codejax.synth.backends import Request

        requests = [Request(messages=(("user", t),), max_tokens=self.max_tokens, temperature=self.temperature)
                    for t in texts]
        got = self.backend.complete(method, requests)
        failed = sum(bool(c.error) for c in got)
        if failed:
            self.errors[method] = self.errors.get(method, 0) + failed
        return [c.text.strip() if not c.error else "" for c in got]

    def critique(self, jobs: Sequence[Job]) -> list[str]:
        texts = [self.prompts.render("critique", conversation=render_conversation(j.task, j.reply),
                                     findings=j.findings.text(), request=j.principle.critique) for j in jobs]
        return ["" if _NO_PROBLEMS.match(c) else c for c in self.ask("cai_critique", texts)]

    def revise(self, jobs: Sequence[Job], critiques: Sequence[str]) -> list[list[str]]:
        todo = [i for i, c in enumerate(critiques) if c]
        texts = [self.prompts.render("revision", conversation=render_conversation(jobs[i].task, jobs[i].reply),
                                     critique=critiques[i], request=jobs[i].principle.revision) for i in todo]
        out: list[list[str]] = [[] for _ in jobs]
        for i, text in zip(todo, self.ask("cai_revision", texts)):
            out[i] = [text] if text else []
        return out

    def judge(self, jobs: Sequence[JudgeJob], principles: Sequence[Principle] = ()) -> list[int | None]:
        texts = []
        for j in jobs:
            for a, b in (j.replies, j.replies[::-1]):
                texts.append(self.prompts.render("judge", conversation=render_conversation(j.task),
                                                 principle=j.principle.critique, a=a, b=b))
        answers = [_letter(t) for t in self.ask("cai_judge", texts)]
        out = []
        for k in range(len(jobs)):
            first, swapped = answers[2 * k], answers[2 * k + 1]
            # consistent: "A" in the first order and "B" in the swapped one both mean reply 0
            out.append(0 if (first, swapped) == ("A", "B") else 1 if (first, swapped) == ("B", "A") else None)
        return out


def _letter(text: str) -> str:
    m = re.search(r"\b([AB])\b", text.strip()[:40])
    return m.group(1) if m else ""
