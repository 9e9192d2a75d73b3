"""A scripted teacher for the synth tests: a Backend whose replies are a function of the prompt, so
every branch of the generators is reachable, and a Context over it."""
import re

from codejax.config import base_config
from codejax.synth import CachedBackend, Completion, Context, Prompts, TokenBudget, VerifySettings, load_seeds

NEW_TASKS = [
    "Write `count_primes(n)` returning how many primes are below n.",
    "Write `is_leap(year)` saying whether a year is a leap year in the Gregorian calendar.",
    "Write `roman(n)` converting a positive integer to Roman numerals.",
    "Write `transpose(m)` returning the transpose of a matrix given as nested lists.",
    "Write `vowel_ratio(s)` giving the share of vowels among the letters of s.",
    "Write `balanced(s)` checking that brackets in s are balanced and properly nested.",
]


def _name(prompt: str) -> str:
    m = re.search(r"`(\w+)\(", prompt)
    return m.group(1) if m else "solve"


def _solution_reply(name: str, broken: bool = False) -> str:
    op = "-" if broken else "+"
    return (f"Solution:\n```python\ndef {name}(a, b=0):\n    return a {op} b\n```\n"
            f"Tests:\n```python\nassert {name}(2, 3) == 5\nassert {name}(1) == 1\n```")


class ScriptedTeacher:
    name = "scripted"

    def __init__(self, broken: str = ""):
        self.calls, self.prompts, self.broken, self._k = 0, [], broken, 0

    def reply(self, p: str) -> str:
        if p.startswith("Write a correct, self-contained Python solution"):
            name = _name(p.split("Task:", 1)[1])
            return _solution_reply(name, broken=bool(self.broken) and self.broken in p)
        if p.startswith("You write programming exercises"):
            self._k += 1
            return NEW_TASKS[(self._k - 1) % len(NEW_TASKS)]
        if p.startswith("Take inspiration"):
            return "Instruction:\nWrite `snip(a, b)` adding two numbers, inspired by the snippet.\n" + _solution_reply("snip")
        if p.startswith("Here is a Python function"):
            name = _name(p.split("Code:", 1)[1].replace("def ", "`", 1))
            return (f"Instruction:\nWrite a function `{name}(...)` as the code does, with its edge cases.\n"
                    f"Tests:\n```python\nassert {name} is not None\n```")
        task = p.split("Task:", 1)[1].split("\n\n")[0].strip() if "Task:" in p else p
        if "Rewrite the programming task" in p or "brand-new programming task" in p:
            return f"{task} It must also reject negative input with ValueError and run in linear time overall."
        if p.startswith("Paraphrase"):
            return "In other words: " + task.replace("Write", "Implement")
        return f"Version B. {task} Explain nothing, just follow the specification closely."

    def complete(self, requests):
        self.calls += len(requests)
        out = []
        for r in requests:
            p = r.messages[0][1] if r.messages else r.prompt
            self.prompts.append(p)
            text = self.reply(p)
            out.append(Completion(text, "stop", len(p.split()), len(text.split())))
        return out


def make_ctx(tmp_path, teacher=None, budget=0, **overrides):
    sc = base_config().synth
    sc.unlock()
    for k, v in {"batch_size": 4, "evol_generations": 2, "mutants": 2, **overrides}.items():
        setattr(sc, k, v)
    teacher = teacher or ScriptedTeacher()
    snippets = ["def mean(xs):\n    return sum(xs) / len(xs)", "def square(x):\n    return x * x"]
    cache = CachedBackend(teacher, str(tmp_path / "cache.jsonl"), TokenBudget(budget))
    ctx = Context(cache, Prompts(sc.prompts_dir), load_seeds(""), lambda: snippets, sc, 0,
                  VerifySettings(timeout_s=5, workers=2, mutants=2))
    return ctx, teacher
