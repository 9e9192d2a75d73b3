"""Each generator's prompts and parsing, the cache, the budget and the prompt overrides, against the
scripted teacher of synth_helpers.py."""
import re

import pytest

from codejax.synth import GENERATORS, CachedBackend, Completion, Prompts, TokenBudget, load_seeds
from codejax.synth.methods import run_generators
from synth_helpers import NEW_TASKS, ScriptedTeacher, make_ctx

def test_self_instruct_prompts_and_novelty(tmp_path):
    ctx, teacher = make_ctx(tmp_path)
    items = GENERATORS["self_instruct"](ctx, 8)
    # only 6 distinct new tasks exist: repeats are not novel against the pool
    assert len(items) == len(NEW_TASKS) and {it.instruction for it in items} == set(NEW_TASKS)
    assert ctx.stats["self_instruct"].eliminated["not_novel"] >= 2
    first = next(p for p in teacher.prompts if p.startswith("You write"))
    assert re.search(r"^1\. .+\n2\. .+\n3\. .+$", first, re.M)  # three pooled examples, numbered
    assert all(it.solution.startswith("def ") and "assert" in it.tests for it in items)


def test_evol_instruct_generations_and_elimination(tmp_path):
    # solutions to tasks evolved from 'reverse_words' fail their tests: they are eliminated and never evolve
    ctx, teacher = make_ctx(tmp_path, ScriptedTeacher(broken="reverse_words"), evol_ops="add_constraints")
    items = GENERATORS["evol_instruct"](ctx, 12)
    assert {it.origin["generation"] for it in items} == {1, 2} and all(it.method == "evol_instruct" for it in items)
    assert ctx.stats["evol_instruct"].eliminated["failed_tests_failed"] >= 1
    assert not any("reverse_words" in it.instruction for it in items)
    parents = {it.id for it in items if it.origin["generation"] == 1}
    assert all(it.origin["parent"] in parents for it in items if it.origin["generation"] == 2)
    assert all("It must also" in it.instruction for it in items)
    # generation 2 evolved generation 1's tasks again
    assert any(it.instruction.count("It must also") == 2 for it in items if it.origin["generation"] == 2)


def test_evol_bug_fix_injects_a_real_bug(tmp_path):
    ctx, teacher = make_ctx(tmp_path, evol_ops="bug_fix", evol_generations=1)
    items = GENERATORS["evol_instruct"](ctx, 6)
    assert len(items) == 6 and teacher.calls == 0  # made without the teacher, verified in the sandbox
    for it in items:  # the buggy code is in the instruction, the parent's correct solution is the answer
        buggy = it.instruction.split("```python\n", 1)[1].split("\n```", 1)[0]
        assert "Buggy code:" in it.instruction and buggy != it.solution and it.origin["op"] == "bug_fix"


def test_oss_instruct_backtranslation_diversify(tmp_path):
    ctx, teacher = make_ctx(tmp_path)
    oss = GENERATORS["oss_instruct"](ctx, 3)
    assert len(oss) == 3 and oss[0].instruction.startswith("Write `snip(a, b)`")
    assert any("def mean(xs)" in p for p in teacher.prompts if p.startswith("Take inspiration"))

    bt = GENERATORS["backtranslation"](ctx, 6)
    to_instr = [it for it in bt if it.origin["direction"] == "code_to_instruction"]
    assert len(to_instr) == 3 and all(it.roundtrip and it.roundtrip[0].startswith("def ") for it in to_instr)
    seeds = {s["solution"]: s["tests"] for s in load_seeds("")}
    for it in to_instr:  # the snippet is the answer; a seed's own tests stay its tests
        if it.solution in seeds:
            assert it.tests == seeds[it.solution] and it.origin["tests_from"] == "seed"
    # instruction -> code -> instruction: kept only when the recovered wording is close enough
    to_code = [it for it in bt if it.origin["direction"] == "instruction_to_code"]
    eliminated = ctx.stats["backtranslation"].eliminated.get("roundtrip_inconsistent", 0)
    assert eliminated >= 1 and len(to_code) + eliminated == 3
    assert all(it.origin["roundtrip_rouge_l"] >= ctx.settings.roundtrip_threshold for it in to_code)

    div = GENERATORS["diversify"](ctx, 8)
    ops = [it.origin["op"] for it in div]
    assert sorted(set(ops)) == ["difficulty", "format", "paraphrase", "persona"]
    persona_prompts = [p for p in teacher.prompts if "as it would be asked by" in p]
    assert persona_prompts and "$persona" not in persona_prompts[0]
    same_task = [it for it in div if it.origin["op"] != "difficulty"]
    assert all(it.solution in seeds for it in same_task)  # the parent's verified answer


def test_cache_resumes_without_regenerating(tmp_path):
    ctx, teacher = make_ctx(tmp_path)
    first, _ = run_generators(ctx, ["self_instruct", "diversify"], 4)
    ctx2, teacher2 = make_ctx(tmp_path)
    again, _ = run_generators(ctx2, ["self_instruct", "diversify"], 4)
    assert teacher.calls > 0 and teacher2.calls == 0
    assert [it.id for it in again] == [it.id for it in first]
    assert ctx2.backend.hits == teacher.calls
    # a cut-off last line (a killed run) is ignored; other settings miss the cache
    with open(tmp_path / "cache.jsonl", "a") as f:
        f.write('{"key": "abc", "text')
    ctx3, teacher3 = make_ctx(tmp_path, temperature=0.2)
    run_generators(ctx3, ["diversify"], 4)
    assert teacher3.calls > 0


def test_token_budget_stops_generation(tmp_path):
    ctx, teacher = make_ctx(tmp_path, budget=200)
    items, stopped = run_generators(ctx, ["self_instruct", "diversify"], 8)
    assert "max_total_tokens=200" in stopped and ctx.backend.budget.used >= 200
    assert items and ctx.stats["self_instruct"].errors > 0  # what was made before is kept; later requests fail
    calls = teacher.calls
    ctx.ask("self_instruct", ["more"])
    assert teacher.calls == calls  # nothing more reaches the teacher
    assert "diversify" not in ctx.stats or ctx.stats["diversify"].requests == 0


def test_prompt_overrides(tmp_path):
    own = tmp_path / "prompts"
    own.mkdir()
    (own / "solve.txt").write_text("MY SOLVE PROMPT for: $instruction")
    ctx, teacher = make_ctx(tmp_path, prompts_dir=str(own))
    assert ctx.prompts.render("solve", instruction="x") == "MY SOLVE PROMPT for: x"
    assert ctx.prompts.render("oss_instruct", snippet="s").startswith("Take inspiration")  # the packaged one
    (own / "slove.txt").write_text("typo")
    with pytest.raises(ValueError, match="slove.txt is not a known prompt"):
        Prompts(str(own))
    (own / "slove.txt").unlink()
    (own / "solve.txt").write_text("Solve $task")
    with pytest.raises(ValueError, match=r"solve.txt: unknown placeholder \$task"):
        Prompts(str(own)).render("solve", instruction="x")


def test_final_errors_are_cached_transient_ones_retried(tmp_path):
    from codejax.synth import Request

    class Failing:
        name, calls = "failing", 0

        def complete(self, requests):
            self.calls += len(requests)
            return [Completion(finish_reason="error", error="too long", final=True) if "long" in r.prompt else
                    Completion(finish_reason="error", error="unreachable") for r in requests]
    for attempt in range(2):
        teacher = Failing()
        cache = CachedBackend(teacher, str(tmp_path / "c.jsonl"), TokenBudget(0))
        out = cache.complete("m", [Request(prompt="long prompt"), Request(prompt="short")])
        assert [c.error for c in out] == ["too long", "unreachable"]
        assert teacher.calls == (2 if attempt == 0 else 1)  # the rerun asks only the transient one again
