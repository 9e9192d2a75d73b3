"""The prompts the constitutional loop runs on: `Task` rows, read from JSONL with file:line errors.

A row is `{"prompt": str}` or `{"messages": [{role, content}, ...]}` (a conversation that ends
with the user's turn: multi-turn follow-ups), plus optional fields:

- kind: what a good reply does. `code` (a coding task: correct, secure code), `harmful` (refuse),
  `benign` (a legitimate request that looks risky: help), `ambiguous` (ask a clarifying
  question), `explain` (code plus an explanation), `chat` (anything else). Default: `code`.
- category: a finer label (the harm category of a harmful request, the insecure shortcut...).
- tests: asserts the reply's code must pass (run in the sandbox).
- reference: a known-good reply; the scripted critic (cai.critic=rules) revises towards it.
- clarify: the question an ambiguous task should get.
- id: a stable id ('' = a hash of the conversation). `meta`: anything else, kept as is.

Any other field is an error naming it: a typo (`test` for `tests`) would otherwise drop the checks silently.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

from codejax.evaluation.benchmarks import BenchmarkDataError, read_jsonl

KINDS = ("code", "harmful", "benign", "ambiguous", "explain", "chat")
_FIELDS = {"prompt", "messages", "kind", "category", "tests", "reference", "clarify", "id", "meta"}
ROLES = ("user", "assistant", "system")


@dataclasses.dataclass(frozen=True)
class Task:
    messages: tuple[tuple[str, str], ...]  # (role, content), ending with the user's turn
    kind: str = "code"
    category: str = ""
    tests: str = ""
    reference: str = ""
    clarify: str = ""
    source: str = "prompts"  # the builder that made it
    task_id: str = ""
    meta: dict = dataclasses.field(default_factory=dict, hash=False, compare=False)

    @property
    def id(self) -> str:
        if self.task_id:
            return self.task_id
        blob = json.dumps([self.messages, self.kind, self.source], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]

    @property
    def request(self) -> str:
        """The user's last turn."""
        return self.messages[-1][1]

    def chat(self) -> list[dict]:
        return [{"role": r, "content": c} for r, c in self.messages]


def user_task(prompt: str, **fields) -> Task:
    return Task(messages=(("user", prompt),), **fields)


def parse_task(row: dict, where: str, source: str = "prompts") -> Task:
    unknown = sorted(set(row) - _FIELDS)
    if unknown:
        raise BenchmarkDataError(f"{where}: unknown field(s) {unknown}; a prompt row has {sorted(_FIELDS)} "
                                 "(put anything else under 'meta')")
    if ("prompt" in row) == ("messages" in row):
        raise BenchmarkDataError(f"{where}: give exactly one of 'prompt' (a string) or 'messages' (a conversation)")
    if "prompt" in row:
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            raise BenchmarkDataError(f"{where}: field 'prompt' must be a non-empty string")
        messages = (("user", row["prompt"].strip()),)
    else:
        msgs = row["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise BenchmarkDataError(f"{where}: field 'messages' must be a non-empty list of {{role, content}}")
        out = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise BenchmarkDataError(f"{where}: field 'messages'[{i}] must be {{role: user|assistant|system, "
                                         "content: str}")
            out.append((m["role"], m["content"]))
        if out[-1][0] != "user":
            raise BenchmarkDataError(f"{where}: field 'messages' must end with the user's turn (the reply is sampled)")
        messages = tuple(out)
    values = {}
    for name in ("kind", "category", "tests", "reference", "clarify", "id"):
        if name in row and not isinstance(row[name], str):
            raise BenchmarkDataError(f"{where}: field {name!r} must be a string, got {type(row[name]).__name__}")
        values[name] = row.get(name, "")
    kind = values["kind"] or "code"
    if kind not in KINDS:
        raise BenchmarkDataError(f"{where}: field 'kind'={kind!r}; expected one of {', '.join(KINDS)}")
    meta = row.get("meta", {})
    if not isinstance(meta, dict):
        raise BenchmarkDataError(f"{where}: field 'meta' must be an object")
    return Task(messages, kind, values["category"], values["tests"], values["reference"], values["clarify"],
                source, values["id"], meta)


def load_tasks(path: str, source: str = "prompts") -> list[Task]:
    tasks = [parse_task(row, f"{path}:{n}", source) for n, row in read_jsonl(path)]
    if not tasks:
        raise BenchmarkDataError(f"{path}: no prompt rows")
    return tasks
