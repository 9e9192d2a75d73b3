"""The generators: each turns seeds or snippets into candidate items through the teacher.

    GENERATORS["oss_instruct"](ctx, n) -> list[Item]

Registered with `@register_generator(name)`; `synth.methods` names them, in order. Every prompt
is a template file in codejax/synth/prompts (`$name` placeholders), which `synth.prompts_dir`
overrides file by file. Every random choice is drawn from an RNG seeded by config.seed and the
method, and every teacher call is cached by its prompt (codejax/synth/backends.py), so a rerun
rebuilds the same prompts and finds their answers in the cache.

- self_instruct (Wang et al. 2023): prompt with 3 tasks drawn from a pool that starts as the
  seeds; a new task enters the pool only if its ROUGE-L against every pooled task is below
  synth.novelty_threshold (0.7, as in the paper); then the teacher solves it with tests.
- evol_instruct (WizardCoder): synth.evol_generations rounds of in-depth evolution (add
  constraints, edge cases, more reasoning, a time/space bound, a deliberate bug to fix) or
  in-breadth mutation. An evolution is eliminated when the new task is empty, a refusal or
  (ROUGE-L >= 0.9) the old one, or when its solution fails verification in the sandbox; only
  survivors evolve further. The bug-fix evolution injects a real bug with
  codejax.codedata.augment into the parent's verified solution, which stays the answer.
- oss_instruct (Magicoder): a new problem, solution and tests inspired by a real snippet
  (synth.snippets_path: the `data` job's rows or any code JSONL; '' = stdlib functions).
- backtranslation, both ways. code -> instruction: the teacher writes the instruction (and tests)
  for a snippet, which becomes the reference answer; round trip: the teacher's own solution to
  that instruction must pass the same tests (checked in the sandbox). instruction -> code: the
  teacher solves a seed task, then back-translates its solution; round trip: the recovered
  instruction's ROUGE-L with the original must reach synth.roundtrip_threshold.
- diversify: paraphrase, change the format, change the persona (same task: the parent's solution
  and tests stay the answer) or the difficulty (a new task, solved anew).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import string
import time
from typing import Callable

from codejax.synth.backends import CachedBackend, Request
from codejax.synth.parse import max_rouge_l, parse_reply, parse_task, rouge_l, words
from codejax.synth.verify import Verdict, VerifySettings, verify

PROMPTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prompts")
SEEDS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds.jsonl")
EVOL_DEPTH = ("add_constraints", "edge_cases", "complexity", "time_space", "bug_fix")
EVOL_OPS = EVOL_DEPTH + ("breadth",)
DIVERSIFY_OPS = ("paraphrase", "format", "persona", "difficulty")
PERSONAS = ("a data scientist cleaning a dataset", "a student on their first programming course",
            "a backend engineer writing a web service", "a game developer", "a researcher analysing logs")
LEVELS = ("an easier, beginner-level", "a harder, interview-level")
UNCHANGED_ROUGE = 0.9


@dataclasses.dataclass
class Item:
    """One candidate: an instruction and its answer (solution + tests), and where it came from."""

    method: str
    instruction: str
    solution: str = ""
    tests: str = ""
    origin: dict = dataclasses.field(default_factory=dict)  # op, generation, direction, snippet source...
    roundtrip: tuple[str, ...] = ()  # more solutions that must pass the tests (backtranslation)
    finish_reason: str = ""

    @property
    def id(self) -> str:
        blob = json.dumps([self.method, self.instruction, self.solution, self.tests], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


# ----------------------------------------------------------------------------- prompts


def prompt_names(base_dir: str = PROMPTS_DIR) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), base_dir)[:-4].replace(os.sep, "/")
                  for d, _, fs in os.walk(base_dir) for f in fs if f.endswith(".txt"))


class Prompts:
    """The templates: <base_dir>/<name>.txt (codejax/synth/prompts), or the same name under `override_dir`
    (the config field `field`)."""

    def __init__(self, override_dir: str = "", base_dir: str = PROMPTS_DIR, field: str = "synth.prompts_dir"):
        self.names = prompt_names(base_dir)
        self.override_dir, self.base_dir = override_dir, base_dir
        if override_dir:
            if not os.path.isdir(override_dir):
                raise FileNotFoundError(f"{field}={override_dir!r} is not a directory")
            for d, _, fs in os.walk(override_dir):
                for f in fs:
                    name = os.path.relpath(os.path.join(d, f), override_dir).replace(os.sep, "/")
                    if not name.endswith(".txt") or name[:-4] not in self.names:
                        raise ValueError(f"{field}: {os.path.join(d, f)} is not a known prompt; "
                                         f"the prompts are {', '.join(n + '.txt' for n in self.names)}")
        self._cache: dict[str, tuple[str, string.Template]] = {}

    def path(self, name: str) -> str:
        own = os.path.join(self.override_dir, name + ".txt") if self.override_dir else ""
        return own if own and os.path.exists(own) else os.path.join(self.base_dir, name + ".txt")

    def render(self, name: str, **values: str) -> str:
        if name not in self._cache:
            path = self.path(name)
            with open(path, encoding="utf-8") as f:
                self._cache[name] = (path, string.Template(f.read()))
        path, template = self._cache[name]
        try:
            return template.substitute(values).strip()
        except KeyError as e:
            raise ValueError(f"{path}: unknown placeholder ${e.args[0]}; this prompt gets "
                             f"{', '.join('$' + k for k in sorted(values))}") from None
        except ValueError as e:  # a lone '$'
            raise ValueError(f"{path}: {e} (write $$ for a literal dollar sign)") from None


# ----------------------------------------------------------------------------- the context


@dataclasses.dataclass
class MethodStats:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: int = 0
    truncated: int = 0
    cached: int = 0
    seconds: float = 0.0
    items: int = 0
    eliminated: dict = dataclasses.field(default_factory=dict)  # reason -> count, inside the method

    def eliminate(self, reason: str, n: int = 1) -> None:
        self.eliminated[reason] = self.eliminated.get(reason, 0) + n


@dataclasses.dataclass
class Context:
    """What a generator gets: the teacher (cached), the prompts, the seeds and snippets, the settings."""

    backend: CachedBackend
    prompts: Prompts
    seeds: list[dict]  # {instruction, solution, tests}; solution and tests may be ''
    snippets: Callable[[], list[str]]  # code snippets, loaded on first use
    settings: object  # config.synth
    seed: int
    verify_settings: VerifySettings
    stats: dict[str, MethodStats] = dataclasses.field(default_factory=dict)
    progress: Callable[[str, int | None], None] = lambda method, n: None  # items made so far (None: a batch done)
    verdicts: dict[str, Verdict] = dataclasses.field(default_factory=dict)  # item id -> verdict (memo)
    _samples: dict[str, int] = dataclasses.field(default_factory=dict)

    def rng(self, method: str) -> random.Random:
        return random.Random(f"{self.seed}:{method}")

    def ask(self, method: str, prompts: list[str], max_tokens: int = 0, temperature: float | None = None) -> list:
        """The teacher's replies (Completions) to `prompts`, in batches; each call of a prompt in a
        method gets its own sample index, so repeating a prompt asks again instead of hitting the cache."""
        sc, st = self.settings, self.stats.setdefault(method, MethodStats())
        start = time.monotonic()
        requests, samples = [], []
        for p in prompts:
            key = f"{method}\0{p}"
            samples.append(self._samples.get(key, 0))
            self._samples[key] = samples[-1] + 1
            common = dict(max_tokens=max_tokens or sc.max_new_tokens,
                          temperature=sc.temperature if temperature is None else temperature, top_p=sc.top_p,
                          seed=self.seed + samples[-1])
            requests.append(Request(messages=(("user", p),), **common) if sc.chat else Request(prompt=p, **common))
        out = []
        step = max(1, sc.batch_size if sc.backend == "local" else sc.max_concurrency * 4)
        for first in range(0, len(requests), step):
            got = self.backend.complete(method, requests[first:first + step], samples[first:first + step])
            out.extend(got)
            st.requests += len(got)
            st.prompt_tokens += sum(c.prompt_tokens for c in got)
            st.completion_tokens += sum(c.completion_tokens for c in got)
            st.errors += sum(bool(c.error) for c in got)
            st.truncated += sum(c.finish_reason == "length" for c in got)
            st.cached += sum(c.cached for c in got)
            st.seconds += time.monotonic() - start
            start = time.monotonic()
            self.progress(method, None)
        return out

    def solve(self, method: str, instructions: list[str]) -> list[tuple[str, str, str]]:
        """(solution, tests, finish_reason) for each instruction, from the `solve` prompt."""
        replies = self.ask(method, [self.prompts.render("solve", instruction=i) for i in instructions])
        out = []
        for c in replies:
            r = parse_reply(c.text) if not c.error else None
            out.append((r.solution, r.tests, c.finish_reason) if r else ("", "", "error"))
        return out

    def verify(self, items: list[Item]) -> list[Verdict]:
        """Sandbox verdicts (codejax/synth/verify.py), memoised by item id for the QC stage."""
        todo = [it for it in items if it.id not in self.verdicts]
        if todo:
            verdicts = verify([(it.solution, it.tests) for it in todo], self.verify_settings,
                              extra=[it.roundtrip for it in todo], names=[it.id for it in todo])
            self.verdicts.update({it.id: v for it, v in zip(todo, verdicts)})
        return [self.verdicts[it.id] for it in items]

    def solved_seeds(self) -> list[dict]:
        return [s for s in self.seeds if s.get("solution") and s.get("tests")]


GENERATORS: dict[str, Callable[[Context, int], list[Item]]] = {}


def register_generator(name: str):
    def wrap(fn):
        GENERATORS[name] = fn
        return fn
    return wrap


def _batches(n: int, ctx: Context) -> int:
    return max(1, min(n, ctx.settings.batch_size))


def _is_refusal(text: str, phrases: tuple[str, ...]) -> bool:
    low = text.lower()
    return any(p in low for p in phrases)


def refusal_phrases(settings) -> tuple[str, ...]:
    return tuple(p.strip().lower() for p in settings.refusal_phrases.split("|") if p.strip())


# ----------------------------------------------------------------------------- self-instruct


@register_generator("self_instruct")
def self_instruct(ctx: Context, n: int) -> list[Item]:
    rng, st = ctx.rng("self_instruct"), ctx.stats.setdefault("self_instruct", MethodStats())
    pool = [s["instruction"] for s in ctx.seeds]
    pool_tokens = [words(t) for t in pool]
    items: list[Item] = []
    for _ in range(max(4, 4 * -(-n // _batches(n, ctx)))):  # rounds: enough for a rejection rate of 3/4
        if len(items) >= n:
            break
        prompts = []
        for _ in range(_batches(n - len(items), ctx)):
            shown = rng.sample(pool, min(3, len(pool)))
            prompts.append(ctx.prompts.render("self_instruct",
                                              examples="\n".join(f"{i + 1}. {t}" for i, t in enumerate(shown))))
        new = []
        for c in ctx.ask("self_instruct", prompts):
            task = parse_task(c.text) if not c.error else ""
            if not task:
                st.eliminate("empty_task")
            elif max_rouge_l(task, pool_tokens) >= ctx.settings.novelty_threshold:
                st.eliminate("not_novel")
            else:
                pool.append(task)
                pool_tokens.append(words(task))
                new.append(task)
        for task, (solution, tests, finish) in zip(new, ctx.solve("self_instruct", new)):
            items.append(Item("self_instruct", task, solution, tests, {"pool_size": len(pool)}, finish_reason=finish))
        ctx.progress("self_instruct", len(items))
    return items[:n]


# ----------------------------------------------------------------------------- evol-instruct


def _evolve_prompt(ctx: Context, op: str, parent: Item, rng: random.Random) -> tuple[str, str] | None:
    """(prompt for the teacher, '') or ('', the finished bug-fix instruction); None if not applicable."""
    if op != "bug_fix":
        return ctx.prompts.render(f"evol/{op}", instruction=parent.instruction), ""
    if not parent.solution:
        return None
    from codejax.codedata import augment

    try:
        bug = augment.inject_bug(parent.solution, rng)
    except (SyntaxError, ValueError):
        return None
    if bug is None:
        return None
    return "", ctx.prompts.render("evol/bug_fix", instruction=parent.instruction, buggy=bug[0])


@register_generator("evol_instruct")
def evol_instruct(ctx: Context, n: int) -> list[Item]:
    sc, rng = ctx.settings, ctx.rng("evol_instruct")
    st = ctx.stats.setdefault("evol_instruct", MethodStats())
    ops = [o.strip() for o in sc.evol_ops.split(",") if o.strip()] or list(EVOL_OPS)
    phrases = refusal_phrases(sc)
    population = [Item("seed", s["instruction"], s.get("solution", ""), s.get("tests", "")) for s in ctx.seeds]
    generations = max(1, sc.evol_generations)
    per_generation = -(-n // generations)
    items: list[Item] = []
    for g in range(1, generations + 1):
        if not population or len(items) >= n:
            break
        parents = [population[i % len(population)] for i in range(min(per_generation, n - len(items)))]
        rng.shuffle(parents)
        asked, finished = [], []  # (parent, op, prompt) to send; (parent, op, instruction) made here
        for parent in parents:
            op = rng.choice(ops)
            made = _evolve_prompt(ctx, op, parent, rng)
            if made is None:  # no site for a bug: evolve in depth another way
                op = rng.choice([o for o in ops if o != "bug_fix"] or ["add_constraints"])
                made = _evolve_prompt(ctx, op, parent, rng)
            prompt, instruction = made
            (finished if instruction else asked).append((parent, op, instruction or prompt))
        replies = ctx.ask("evol_instruct", [p for _, _, p in asked])
        candidates: list[tuple[Item, str, str]] = []
        for (parent, op, _), c in zip(asked, replies):
            task = parse_task(c.text) if not c.error else ""
            if not task:
                st.eliminate("empty_task")
            elif _is_refusal(task, phrases):
                st.eliminate("refusal")
            elif rouge_l(task, parent.instruction) >= UNCHANGED_ROUGE:
                st.eliminate("unchanged")
            elif "new task:" in task.lower() or "#given prompt#" in task.lower():
                st.eliminate("copied_prompt")
            else:
                candidates.append((parent, op, task))
        solved = ctx.solve("evol_instruct", [t for _, _, t in candidates])
        born = [Item("evol_instruct", task, sol, tests, {"op": op, "generation": g, "parent": parent.id},
                     finish_reason=finish) for (parent, op, task), (sol, tests, finish) in zip(candidates, solved)]
        born += [Item("evol_instruct", task, parent.solution, parent.tests, {"op": "bug_fix", "generation": g,
                                                                              "parent": parent.id})
                 for parent, _, task in finished]
        survivors = []
        for item, verdict in zip(born, ctx.verify(born) if sc.verify else [None] * len(born)):
            if verdict is not None and not verdict.ok:
                st.eliminate(f"failed_{verdict.reason}")
            else:
                survivors.append(item)
        items += survivors
        population = survivors
        ctx.progress("evol_instruct", len(items))
    return items[:n]


# ----------------------------------------------------------------------------- OSS-Instruct


@register_generator("oss_instruct")
def oss_instruct(ctx: Context, n: int) -> list[Item]:
    snippets = ctx.snippets()
    if not snippets:
        raise ValueError("synth.methods has oss_instruct but no code snippets were found (synth.snippets_path)")
    rng = ctx.rng("oss_instruct")
    order = rng.sample(snippets, len(snippets))
    chosen = [order[i % len(order)] for i in range(n)]  # each snippet once before any repeats
    items: list[Item] = []
    step = _batches(n, ctx)
    for first in range(0, n, step):
        part = chosen[first:first + step]
        replies = ctx.ask("oss_instruct", [ctx.prompts.render("oss_instruct", snippet=s) for s in part])
        for snippet, c in zip(part, replies):
            r = parse_reply(c.text)
            items.append(Item("oss_instruct", r.instruction, r.solution, r.tests,
                              {"snippet_sha": hashlib.sha256(snippet.encode()).hexdigest()[:12]},
                              finish_reason=c.finish_reason))
        ctx.progress("oss_instruct", len(items))
    return items


# ----------------------------------------------------------------------------- backtranslation


@register_generator("backtranslation")
def backtranslation(ctx: Context, n: int) -> list[Item]:
    rng, st = ctx.rng("backtranslation"), ctx.stats.setdefault("backtranslation", MethodStats())
    to_instruction = n - n // 2
    # code -> instruction: seeds' solutions (their tests are trusted answers) and snippets.
    codes = [(s["solution"], s["tests"]) for s in ctx.solved_seeds()]
    codes += [(s, "") for s in ctx.snippets()]
    picks = [codes[i] for i in sorted(rng.sample(range(len(codes)), min(to_instruction, len(codes))))] if codes else []
    items: list[Item] = []
    replies = ctx.ask("backtranslation", [ctx.prompts.render("backtranslate_code", code=code) for code, _ in picks])
    described = []
    for (code, tests), c in zip(picks, replies):
        r = parse_reply(c.text)
        if not r.instruction:
            st.eliminate("empty_instruction")
            continue
        described.append((code, tests or r.tests, r.instruction, "seed" if tests else "teacher"))
    again = ctx.solve("backtranslation", [d[2] for d in described])
    for (code, tests, instruction, tests_from), (code2, _, _) in zip(described, again):
        items.append(Item("backtranslation", instruction, code, tests,
                          {"direction": "code_to_instruction", "tests_from": tests_from},
                          roundtrip=(code2,) if code2 else ("",)))
    ctx.progress("backtranslation", len(items))
    # instruction -> code: seed tasks solved, then the solution back-translated.
    tasks = [s["instruction"] for s in ctx.seeds]
    tasks = [tasks[i % len(tasks)] for i in range(n // 2)] if tasks else []
    solved = ctx.solve("backtranslation", tasks)
    back = ctx.ask("backtranslation", [ctx.prompts.render("backtranslate_code", code=sol) for sol, _, _ in solved])
    for task, (sol, tests, finish), c in zip(tasks, solved, back):
        recovered = parse_reply(c.text).instruction
        score = rouge_l(task, recovered)
        if score < ctx.settings.roundtrip_threshold:
            st.eliminate("roundtrip_inconsistent")
            continue
        items.append(Item("backtranslation", task, sol, tests, {"direction": "instruction_to_code",
                                                               "roundtrip_rouge_l": round(score, 3)},
                          finish_reason=finish))
    ctx.progress("backtranslation", len(items))
    return items


# ----------------------------------------------------------------------------- diversification


@register_generator("diversify")
def diversify(ctx: Context, n: int) -> list[Item]:
    sc, rng = ctx.settings, ctx.rng("diversify")
    st = ctx.stats.setdefault("diversify", MethodStats())
    ops = [o.strip() for o in sc.diversify_ops.split(",") if o.strip()] or list(DIVERSIFY_OPS)
    parents = ctx.solved_seeds() or ctx.seeds
    plan = []
    for i in range(n):
        parent, op = parents[i % len(parents)], ops[i % len(ops)]
        values = {"instruction": parent["instruction"]}
        if op == "persona":
            values["persona"] = rng.choice(PERSONAS)
        elif op == "difficulty":
            values["level"] = rng.choice(LEVELS)
        plan.append((parent, op, ctx.prompts.render(f"diversify/{op}", **values), values))
    replies = ctx.ask("diversify", [p for _, _, p, _ in plan])
    kept, to_solve = [], []
    for (parent, op, _, values), c in zip(plan, replies):
        task = parse_task(c.text) if not c.error else ""
        if not task:
            st.eliminate("empty_task")
        elif rouge_l(task, parent["instruction"]) >= 0.95:
            st.eliminate("unchanged")
        else:
            origin = {"op": op, **{k: v for k, v in values.items() if k != "instruction"}}
            (to_solve if op == "difficulty" else kept).append((parent, task, origin))
    items = [Item("diversify", task, parent.get("solution", ""), parent.get("tests", ""), origin)
             for parent, task, origin in kept]
    for (parent, task, origin), (sol, tests, finish) in zip(to_solve, ctx.solve("diversify", [t for _, t, _ in to_solve])):
        items.append(Item("diversify", task, sol, tests, origin, finish_reason=finish))
    ctx.progress("diversify", len(items))
    return items


def run_generators(ctx: Context, methods: list[str], n: int) -> tuple[list[Item], str]:
    """Every method's candidates; the second value says why generation stopped early ('' if it did not)."""
    items: list[Item] = []
    for method in methods:
        if ctx.backend.budget.spent:
            break
        made = GENERATORS[method](ctx, n)
        ctx.stats.setdefault(method, MethodStats()).items = len(made)
        items += made
    return items, ctx.backend.budget.spent
