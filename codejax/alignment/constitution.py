"""Constitutions as files: a YAML or JSON list of principles, each a critique and a revision request.

    constitution = load_constitution("")                     # the default: constitutions/code_assistant.yaml
    constitution = load_constitution("my_principles.yaml")   # {name?, principles: [...]} or a bare list
    constitution.principles[0].critique

A principle is `{name, critique, revision, category?, check?, bandit_ids?}`: `name` an identifier,
unique in the file; `check` the rule the scripted critic applies for it (codejax/alignment/rules.py
RULES; a principle without one is for model critics only); `bandit_ids` narrows a `security` check
to those bandit tests. Any other key is an error naming the file, the principle (its line in YAML)
and the key.
"""
from __future__ import annotations

import dataclasses
import json
import os

import yaml

from codejax.alignment.rules import RULES

CONSTITUTIONS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "constitutions")
DEFAULT_CONSTITUTION = os.path.join(CONSTITUTIONS_DIR, "code_assistant.yaml")
_KEYS = {"name", "critique", "revision", "category", "check", "bandit_ids"}


class ConstitutionError(ValueError):
    """A constitution file that cannot be used; the message names the file, principle and field."""


@dataclasses.dataclass(frozen=True)
class Principle:
    name: str
    critique: str
    revision: str
    category: str = ""
    check: str = ""
    bandit_ids: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Constitution:
    name: str
    principles: tuple[Principle, ...]
    path: str

    def get(self, name: str) -> Principle:
        return next(p for p in self.principles if p.name == name)


def _lines(text: str) -> list[int]:
    """The 1-based line of each principle in a YAML file (0 when it cannot tell)."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return []
    if isinstance(node, yaml.MappingNode):
        node = next((v for k, v in node.value if getattr(k, "value", None) == "principles"), None)
    return [item.start_mark.line + 1 for item in node.value] if isinstance(node, yaml.SequenceNode) else []


def load_constitution(path: str = "") -> Constitution:
    path = path or DEFAULT_CONSTITUTION
    if not os.path.isfile(path):
        raise FileNotFoundError(f"cai.constitution_path={path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConstitutionError(f"{path}: not valid {'JSON' if path.endswith('.json') else 'YAML'}: {e}") from None
    name = os.path.splitext(os.path.basename(path))[0]
    if isinstance(data, dict):
        extra = sorted(set(data) - {"name", "principles"})
        if extra:
            raise ConstitutionError(f"{path}: unknown top-level key(s) {extra}; expected 'name' and 'principles'")
        name, data = str(data.get("name", name)), data.get("principles")
    if not isinstance(data, list) or not data:
        raise ConstitutionError(f"{path}: expected a non-empty list of principles (or {{name, principles: [...]}})")
    lines = _lines(text) if not path.endswith(".json") else []
    principles, seen = [], set()
    for i, item in enumerate(data):
        where = f"{path}: principle {i}" + (f" (line {lines[i]})" if i < len(lines) else "")
        if not isinstance(item, dict):
            raise ConstitutionError(f"{where}: expected a mapping with name, critique and revision")
        unknown = sorted(set(item) - _KEYS)
        if unknown:
            raise ConstitutionError(f"{where}: unknown key(s) {unknown}; a principle has {sorted(_KEYS)}")
        for key in ("name", "critique", "revision"):
            if not isinstance(item.get(key), str) or not item[key].strip():
                raise ConstitutionError(f"{where}: field {key!r} must be a non-empty string")
        if not item["name"].isidentifier():
            raise ConstitutionError(f"{where}: field 'name'={item['name']!r} must be an identifier (letters, digits, _)")
        if item["name"] in seen:
            raise ConstitutionError(f"{where}: field 'name'={item['name']!r} repeats an earlier principle")
        seen.add(item["name"])
        check = item.get("check", "") or ""
        if check not in RULES and check:
            raise ConstitutionError(f"{where}: field 'check'={check!r}; the scripted critic's checks are "
                                    f"{', '.join(RULES)} (or leave it out)")
        ids = item.get("bandit_ids", []) or []
        if not isinstance(ids, list) or not all(isinstance(x, str) for x in ids):
            raise ConstitutionError(f"{where}: field 'bandit_ids' must be a list of bandit test ids like B602")
        if ids and check != "security":
            raise ConstitutionError(f"{where}: field 'bandit_ids' only applies to check: security")
        principles.append(Principle(item["name"], " ".join(item["critique"].split()),
                                    " ".join(item["revision"].split()), str(item.get("category", "") or ""),
                                    check, tuple(ids)))
    return Constitution(name, tuple(principles), path)
