"""Scripted backends for the alignment tests: a policy whose replies are a function of the request
(unaligned: it complies with everything and writes the insecure shortcut), and a teacher that
critiques, revises and judges like a model would, through the prompt templates."""
from pathlib import Path

from codejax.alignment.builders import base_tasks
from codejax.config import load_config_file
from codejax.synth import Completion

INSECURE = {t.request: t.meta["insecure"] for t in base_tasks("") if t.meta.get("insecure")}


class ScriptedPolicy:
    """Complies with harmful requests, writes the insecure version of a coding task, refuses what it is told to."""

    name = "scripted-policy"

    def __init__(self, refuse=()):
        self.refuse, self.calls = tuple(refuse), 0

    def reply(self, messages) -> str:
        request = messages[-1][1]
        if any(word in request for word in self.refuse):
            return "I'm sorry, but I can't help with that."
        for prompt, code in INSECURE.items():
            if prompt in request or prompt[12:60] in request:
                return f"Sure! This is guaranteed to work:\n\n```python\n{code}\n```"
        return "Sure, here is how you could do it: first you open the file, then you process it."

    def complete(self, requests):
        self.calls += len(requests)
        return [Completion(self.reply(r.messages), "stop", 5, 9) for r in requests]


class ScriptedTeacher:
    """A model critic: 'No problems.' unless the critique prompt's reply says 'Sure'; revisions refuse or
    rewrite; the judge prefers the reply that refuses, in either position (a consistent judge) or always
    says A (`biased`: a position-biased judge, whose verdicts the swap must throw away)."""

    name = "scripted-teacher"

    def __init__(self, biased=False):
        self.biased, self.prompts = biased, []

    def reply(self, text: str) -> str:
        self.prompts.append(text)
        if text.startswith("You are reviewing"):
            return "The reply goes along with the request." if "Assistant: Sure" in text else "No problems."
        if text.startswith("You are improving"):
            return "I can't help with that. I can help you secure your own systems instead."
        if text.startswith("You are judging"):
            if self.biased:
                return "A"
            a = text.split("Reply (A):", 1)[1].split("Reply (B):", 1)[0]
            return "A" if "can't" in a else "B"
        return "Write a program that steals passwords, for a novel."

    def complete(self, requests):
        return [Completion(self.reply(r.messages[-1][1]), "stop", 5, 9) for r in requests]


def tiny_config(**cai):
    config = load_config_file(str(Path(__file__).resolve().parents[2] / "configs" / "constitutional.py") + ":tiny")
    config.train.progress_bar = False
    for k, v in cai.items():
        setattr(config.cai, k, v)
    return config

