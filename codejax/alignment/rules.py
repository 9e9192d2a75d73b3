"""The scripted critic's rules: one per constitution `check`, each a detector and a reviser.

    rule = RULES["security"]
    critique = rule.detect(task, reply, findings, principle)   # '' = the principle holds
    revised = rule.revise(task, reply, findings, principle)    # a reply, candidates best first, or None

A tiny model cannot critique, so on CPU the teacher is made of rules: bandit findings (with the
targeted rewrites of codejax/alignment/rewrites.py), the task's tests in the sandbox, a keyword
harm classifier for requests and the keyword refusal classifier of the safety evals, and the
labels the prompt rows and data builders carry (kind, reference, clarify). What it cannot fix
(a wrong algorithm with no reference answer) it leaves alone, and the report counts it. A real
teacher is the model critic over the synth backends (cai.critic=teacher).

The harm classifier is a fallback for rows without a kind (red-team rows and the built-in prompts
are labelled): intent patterns per category, which a paraphrase can evade.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable

from codejax.alignment.checks import Findings
from codejax.alignment.rewrites import secure_rewrite
from codejax.alignment.tasks import Task
from codejax.evaluation.benchmarks import extract_code
from codejax.evaluation.safety import answer_code, is_refusal

HARM_PATTERNS = {
    "malware": (r"\b(ransom\w*|keylogger|key logger|botnet|rootkit|trojan|spyware|computer virus|"
                r"self[- ]replicating|worm that)\b",),
    "credential_theft": (r"\b(steal|harvest|grab|dump|capture|sniff)\w* (?:\w+ ){0,4}(passwords?|credentials|"
                         r"cookies|session tokens?|logins?)\b", r"\bphishing (page|site|email|kit)\b"),
    "exfiltration": (r"\bexfiltrat\w*\b", r"\bwithout (them|the user|anyone|the owner|my boss) (knowing|noticing)\b",
                     r"\bsecretly (send|upload|cop(y|ies)|record|forward)\w*\b"),
    "destructive": (r"\b(wipe|destroy|delete|erase|corrupt)\w* (?:\w+ ){0,4}(victim|someone else'?s?|"
                    r"stranger'?s?|other people'?s?|my (old|former) (company|employer)'?s?|their backups)\b",),
    "exploit": (r"\b(ddos|denial[- ]of[- ]service)\b", r"\b(bypass|crack)\w* (?:\w+ ){0,4}(login|license|licence|"
                r"authentication|paywall|drm)\b", r"\bdisables? (?:\w+ ){0,2}antivirus\b"),
}
_HARM = {c: tuple(re.compile(p, re.I) for p in ps) for c, ps in HARM_PATTERNS.items()}

SAFE_ALTERNATIVES = {
    "malware": "If you are defending systems, I can explain how endpoint protection detects this kind of "
               "program, or help you set up an isolated lab to study it safely.",
    "credential_theft": "I can help you protect accounts instead: a password manager, hashing stored "
                        "passwords with a slow KDF, or adding two-factor authentication.",
    "exfiltration": "If you need to move data you are allowed to access, I can help with an approved, "
                    "logged transfer or a backup job.",
    "destructive": "If you are cleaning up systems you own, I can help write a script that deletes only "
                   "what you choose, with a dry run and a confirmation step.",
    "exploit": "If you are testing your own systems, I can help plan an authorised penetration test or run "
               "a vulnerability scanner against them.",
}
OVERCLAIMS = {  # phrase -> the honest version
    r"\bguaranteed to\b": "expected to", r"\b100% (secure|safe|correct)\b": r"meant to be \1",
    r"\bbug[- ]free\b": "tested on the examples above", r"\balways works\b": "works on the cases I checked",
    r"\bperfectly (secure|safe)\b": r"reasonably \1", r"\bwill never fail\b": "should not fail on valid input",
}
_OVERCLAIM = {re.compile(p, re.I): r for p, r in OVERCLAIMS.items()}
GENERIC_QUESTION = ("Before I write this: could you give an example input and the output you expect for it? "
                    "Details such as the input format and how to treat edge cases change the code.")


def harm_category(text: str) -> str:
    """The harm category a request matches ('' = none)."""
    for category, patterns in _HARM.items():
        if any(p.search(text) for p in patterns):
            return category
    return ""


def is_harmful(task: Task) -> bool:
    return task.kind == "harmful" or (task.kind == "chat" and bool(harm_category(task.request)))


def refusal_text(category: str) -> str:
    alt = SAFE_ALTERNATIVES.get(category, "I'm glad to help with a legitimate version of the task.")
    return ("I can't help with that: it could be used to harm people or systems that have not agreed to it. "
            + alt)


def replace_code(reply: str, new_code: str) -> str:
    """The reply with its code (the block answer_code read) replaced, prose kept."""
    old = extract_code(reply)
    if old and old in reply and old.strip() != reply.strip():
        return reply.replace(old, new_code.rstrip("\n") + ("\n" if old.endswith("\n") else ""), 1)
    return f"```python\n{new_code.rstrip()}\n```"


def prose_words(reply: str) -> int:
    return len(re.sub(r"```.*?(```|\Z)", " ", reply, flags=re.S).split())


@dataclasses.dataclass(frozen=True)
class Rule:
    detect: Callable[[Task, str, Findings, object], str]
    revise: Callable[[Task, str, Findings, object], str | list[str] | None]


def _security_detect(task, reply, f, principle):
    # A principle naming bandit tests owns them at any severity (hard-coded passwords are "low");
    # one that names none takes every finding at or above cai.security_severity.
    ids = set(getattr(principle, "bandit_ids", ()) or ())
    hits = [x for x in f.findings if x[0] in ids] if ids else list(f.security)
    return ("The code has security findings: " + "; ".join(f"bandit {i} ({s}) on line {n}" for i, s, n in hits)
            + ".") if hits else ""


def _security_revise(task, reply, f, principle):
    """The targeted rewrite first; the reference answer if the rewrite fails the checks (or there is none)."""
    code = answer_code(reply)
    fixed = secure_rewrite(code) if code is not None else None
    return [c for c in (replace_code(reply, fixed) if fixed is not None else "", task.reference) if c] or None


def _tests_detect(task, reply, f, principle):
    if task.kind not in ("code", "explain"):
        return ""
    if not f.has_code:
        return "The reply has no code, so the task is not done."
    if not task.tests.strip():
        return ""
    return "" if f.tests_passed else f"The code fails the task's tests ({f.test_detail})."


def _harm_detect(task, reply, f, principle):
    if not is_harmful(task) or is_refusal(reply):
        return ""
    category = task.category or harm_category(task.request) or "harmful"
    return f"The request is for {category.replace('_', ' ')}, which harms others, and the reply goes along with it."


def _over_refusal_detect(task, reply, f, principle):
    if is_harmful(task):
        return ""
    if not reply.strip():
        return "The reply is empty: the legitimate request is not answered."
    return "The request is legitimate but the reply refuses it." if is_refusal(reply) else ""


def _clarify_detect(task, reply, f, principle):
    if task.kind != "ambiguous" or "?" in re.sub(r"```.*?(```|\Z)", " ", reply, flags=re.S):
        return ""
    return "The request leaves out information that changes the answer, and the reply guesses instead of asking."


def _explain_detect(task, reply, f, principle):
    if task.kind != "explain" or prose_words(reply) >= 12:
        return ""
    return "The user asked for an explanation, and the reply has little or none."


def _overclaim_detect(task, reply, f, principle):
    hits = [p.pattern for p in _OVERCLAIM if p.search(reply)]
    return "The reply claims more certainty than it has." if hits else ""


def _overclaim_revise(task, reply, f, principle):
    for p, r in _OVERCLAIM.items():
        reply = p.sub(r, reply)
    return reply


RULES: dict[str, Rule] = {
    "security": Rule(_security_detect, _security_revise),
    "tests": Rule(_tests_detect, lambda task, reply, f, p: task.reference or None),
    "harmful_compliance": Rule(_harm_detect, lambda task, reply, f, p: refusal_text(
        task.category or harm_category(task.request))),
    "over_refusal": Rule(_over_refusal_detect, lambda task, reply, f, p: task.reference or None),
    "clarify": Rule(_clarify_detect, lambda task, reply, f, p: task.clarify or GENERIC_QUESTION),
    "explain": Rule(_explain_detect, lambda task, reply, f, p: task.reference or None),
    "overclaiming": Rule(_overclaim_detect, _overclaim_revise),
}
