"""The reply parser, ROUGE-L, the safe assert form and sandbox verification, on crafted inputs."""
import pytest

from codejax.synth.parse import max_rouge_l, parse_reply, parse_score, parse_task, rouge_l, split_asserts, words
from codejax.synth.verify import VerifySettings, mutants, safe_tests, verify

SOLUTION = "def add(a, b):\n    return a + b"
TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0"
SETTINGS = VerifySettings(timeout_s=5.0, workers=2, mutants=3, min_kill_fraction=0.5)


def test_parse_reply_sections_and_fallbacks():
    text = ("**Instruction:** Write `add(a, b)` returning the sum.\n\nSolution:\n```python\n" + SOLUTION +
            "\n```\nTests:\n```python\n" + TESTS + "\n```\nThanks!")
    r = parse_reply(text)
    assert r.instruction == "Write `add(a, b)` returning the sum."
    assert (r.solution, r.tests) == (SOLUTION, TESTS)
    # asserts inside the solution block are split off; bare code is the solution
    r = parse_reply("```python\n" + SOLUTION + "\n" + TESTS + "\n```")
    assert (r.solution, r.tests) == (SOLUTION, TESTS)
    assert parse_reply(SOLUTION).solution == SOLUTION
    # unfenced asserts under a Tests: label; an unclosed fence still counts
    r = parse_reply("Solution:\n```python\n" + SOLUTION + "\n```\nTests:\nassert add(1, 1) == 2\n")
    assert r.tests == "assert add(1, 1) == 2"
    assert parse_reply("Solution:\n```python\n" + SOLUTION).solution == SOLUTION
    # prose that is not code is not a solution
    assert parse_reply("I am not sure what you mean.").solution == ""
    assert split_asserts("def f(:\nassert x") == ("def f(:\nassert x", "")


def test_parse_task_and_score():
    assert parse_task("New task: Write `f(x)` that doubles x.\n```python\ndef f(x): ...\n```") == \
        "Write `f(x)` that doubles x."
    assert parse_task("Write g.\nSolution:\n```python\ndef g(): pass\n```") == "Write g."
    assert parse_score("Score: 7") == 7 and parse_score("score = 11") is None and parse_score("great") is None


def test_rouge_l():
    assert rouge_l("a b c d", "a b c d") == pytest.approx(1.0)
    assert rouge_l("a b c d", "e f g") == 0.0
    # LCS 'a c d' = 3 of 4 and 4 tokens: F1 = 0.75
    assert rouge_l("a b c d", "a c d e") == pytest.approx(0.75)
    pool = [words("sort a list of numbers"), words("reverse a string")]
    assert max_rouge_l("reverse a string", pool) == pytest.approx(1.0)
    assert max_rouge_l("anything", []) == 0.0


def test_safe_tests_keeps_asserts_and_refuses_escapes():
    st = safe_tests(TESTS + "\nimport os\nprint('hi')\nassert all(add(i, 0) == i for i in range(3))", SOLUTION)
    assert st.kept == 3 and st.dropped == 2
    hostile = [
        "assert open('/etc/passwd')",                       # a builtin the judge would run itself
        "assert add.__globals__",                           # dunder walk
        "assert (x for x in []).gi_frame.f_globals",        # frame walk from a judge-side generator
        "assert '{0.__class__}'.format(add)",               # format-string attribute walk
        "assert __import__('os').write(3, b'PASSED')",      # forge the verdict
        "assert (lambda: 1)()",                             # lambdas
        "assert exec('1') is None",
        "assert True",                                      # does not use the solution
        "assert 1 == 1",
    ]
    for line in hostile:
        assert safe_tests(line, SOLUTION).kept == 0, line
    # a solution that defines `open` does not make `open` usable: builtin names never resolve to it
    assert safe_tests("assert open('x') == 1", "def open(p):\n    return 1").kept == 0
    assert "do not parse" in safe_tests("assert (", SOLUTION).reason


def test_mutants_are_buggy_copies():
    found = mutants(SOLUTION, 3, "seed")
    assert found and all(m != SOLUTION for m in found) and len(set(found)) == len(found)


def test_verify_passes_real_solutions_and_catches_lies():
    cases = {
        "good": (SOLUTION, TESTS),
        "wrong": ("def add(a, b):\n    return a - b", TESTS),
        # claims success on stdout and exits before the tests
        "prints_pass": ("import sys\nprint('All tests passed')\nsys.exit(0)\ndef add(a, b):\n    return 0", TESTS),
        # an object that equals everything
        "eq_true": ("class A:\n    def __eq__(self, o):\n        return True\ndef add(a, b):\n    return A()", TESTS),
        # tests that cannot fail: kept as an assert, caught by the mutants
        "weak": (SOLUTION, "assert add(1, 2) == add(1, 2)"),
        "no_tests": (SOLUTION, "print(add(1, 2))"),
        "no_solution": ("", TESTS),
        "escape": (SOLUTION, "assert __import__('os').write(3, b'x')"),
    }
    names = list(cases)
    verdicts = dict(zip(names, verify([cases[n] for n in names], SETTINGS, names=names)))
    assert verdicts["good"].ok and verdicts["good"].mutants >= 1 and verdicts["good"].killed >= 1
    assert verdicts["wrong"].reason == "tests_failed"
    assert verdicts["prints_pass"].reason == "tests_failed"
    assert verdicts["eq_true"].reason == "tests_failed"
    assert verdicts["weak"].reason == "weak_tests"
    assert verdicts["no_tests"].reason == "no_safe_tests"
    assert verdicts["no_solution"].reason == "no_solution"
    assert verdicts["escape"].reason == "no_safe_tests"
    # the round trip: a second solution must pass the same tests
    rt = verify([(SOLUTION, TESTS)] * 2, SETTINGS, extra=[(SOLUTION,), ("def add(a, b):\n    return a * b",)])
    assert rt[0].ok and rt[1].reason == "roundtrip_failed"


def test_builtin_seeds_verify():
    from codejax.synth import load_seeds
    seeds = load_seeds("")
    verdicts = verify([(s["solution"], s["tests"]) for s in seeds], SETTINGS)
    assert len(seeds) >= 12 and all(v.ok for v in verdicts), [v for v in verdicts if not v.ok]
