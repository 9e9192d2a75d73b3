"""Task builders: row shapes per task and format, FIM layout, determinism, counted skips,
and (in the sandbox) that generated tests pass and injected bugs are observable."""

import ast
import json
import multiprocessing
import os
import pickle
import random
import re
import subprocess
import sys

import pytest

from codejax.codedata import mine_source
from codejax.corpus import list_source_files, stdlib_root
from codejax.codedata import augment, tasks
from codejax.codedata.augment import execution
from codejax.sandbox import Program, run_programs
from codejax.tokenizer.train import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX

SAMPLE = '''\
"""Small text and number utilities."""
from __future__ import annotations

import math

SEPARATOR = ","


def mean(values: list[float]) -> float:
    """Return the arithmetic mean of a non-empty list.

    >>> mean([1, 2, 3])
    2.0
    >>> mean([])
    Traceback (most recent call last):
    ...
    ValueError: mean of empty list
    """
    if not values:
        raise ValueError("mean of empty list")
    total = 0.0
    for value in values:
        total += value
    return total / len(values)


def count_words(text: str, sep: str = " ") -> int:
    """Count the words in a piece of text.

    >>> count_words("a b  c")
    3
    """
    words = [w for w in text.split(sep) if w]
    count = 0
    i = 0
    while i < len(words):
        count += 1
        i += 1
    return count


def join_fields(fields, sep=SEPARATOR):
    """Join the fields into one line, quoting those that contain the separator.

    >>> join_fields(["a", "b,c"])
    'a,"b,c"'
    """
    out = []
    for field in fields:
        if sep in field:
            out.append('"{}"'.format(field))
        else:
            out.append(field)
    return sep.join(out)


def is_prime(n: int) -> bool:
    """Check whether a number is prime by trial division.

    >>> [k for k in range(10) if is_prime(k)]
    [2, 3, 5, 7]
    """
    if n < 2:
        return False
    limit = int(math.sqrt(n))
    for d in range(2, limit + 1):
        if n % d == 0:
            return False
    return True
'''
RECORD = {"content": SAMPLE, "path": "pkg/textutil.py", "repo": "acme/utils", "license": "mit", "language": "Python"}
FUNCTIONS = ["mean", "count_words", "join_fields", "is_prime"]
BASE_KEYS = {"task", "repo", "path", "license", "function", "lineno", "difficulty"}


def _source_of(name):
    """The function's text as it appears in SAMPLE (all are module-level)."""
    tree = ast.parse(SAMPLE)
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    return "".join(SAMPLE.splitlines(keepends=True)[node.lineno - 1:node.end_lineno])


def _build(names=tasks.TASK_NAMES, seed=0, record=RECORD, **options):
    return tasks.build_tasks(record, names, random.Random(seed), tasks.TaskOptions(**options))


@pytest.fixture(scope="module")
def alpaca_rows():
    rows, skipped = _build(fim_rate=1.0)
    return rows, skipped


def test_every_task_yields_rows_of_the_right_shape(alpaca_rows):
    rows, skipped = alpaca_rows
    by_task = {}
    for row in rows:
        by_task.setdefault(row["task"], []).append(row)
        assert BASE_KEYS <= set(row), row
        assert row["repo"] == "acme/utils" and row["path"] == "pkg/textutil.py" and row["license"] == "mit"
        assert isinstance(row["difficulty"], float) and 0.0 <= row["difficulty"] <= 1.0
        assert row["function"] in FUNCTIONS
        if row["task"] == "preference":
            assert all(isinstance(row[k], str) and row[k] for k in ("prompt", "chosen", "rejected"))
            assert row["chosen"] != row["rejected"]
            assert "instruction" not in row and "messages" not in row
        else:
            assert all(isinstance(row[k], str) for k in ("instruction", "input", "output"))
            assert row["instruction"] and row["output"].strip()
    assert sorted(by_task) == sorted(set(tasks.TASK_NAMES) - {"tool_repair"})  # that one needs the sandbox
    # Every function has a docstring and a body, so these tasks cover all four...
    for task in ("function_impl", "completion", "fim", "docstring", "variable_naming", "code_search", "repair",
                 "refactor", "preference", "bug_detection"):
        assert [r["function"] for r in by_task[task]] == FUNCTIONS, task
    # ...while join_fields has no annotations to infer.
    assert [r["function"] for r in by_task["type_inference"]] == ["mean", "count_words", "is_prime"]
    assert skipped == {"type_inference:no_annotations": 1, "tool_repair:no_sandbox": 4}
    # Longer, branchier functions are rated harder.
    difficulty = {r["function"]: r["difficulty"] for r in by_task["function_impl"]}
    assert difficulty["is_prime"] > difficulty["mean"]


def test_function_impl_rows_are_mine_source_rows(alpaca_rows):
    mined, _ = mine_source(SAMPLE, "pkg/textutil.py")
    rows = [r for r in alpaca_rows[0] if r["task"] == "function_impl"]
    assert [(r["instruction"], r["input"], r["output"]) for r in rows] == [
        (m["instruction"], m["input"], m["output"]) for m in mined]


def test_understanding_rows(alpaca_rows):
    rows = alpaca_rows[0]
    get = {(r["task"], r["function"]): r for r in rows}
    # docstring: code without the docstring in, the docstring out
    doc = get[("docstring", "mean")]
    assert '"""' not in doc["input"] and doc["output"].startswith("Return the arithmetic mean")
    # type inference: no annotation left on the function itself; the answer is the signature
    types = get[("type_inference", "count_words")]
    fn = ast.parse(types["input"]).body[0]
    assert fn.returns is None and all(a.annotation is None for a in fn.args.args)
    assert types["output"] == 'def count_words(text: str, sep: str = " ") -> int:'
    # variable naming: putting the names back gives the original function
    naming = get[("variable_naming", "count_words")]
    restored = naming["input"]
    for line in naming["output"].splitlines():
        mask, name = line.split(": ")
        restored = re.sub(rf"\b{mask}\b", name, restored)
    assert restored == _source_of("count_words") and "var_0" in naming["input"]
    # code search: the letter points at the right candidate
    for row in (r for r in rows if r["task"] == "code_search"):
        letter = row["output"][0]
        if row["direction"] == "query_to_code":
            block = row["input"].split(f"\n{letter}:\n", 1)[1]
            assert block.startswith(f"def {row['function']}(")
        else:
            line = next(ln for ln in row["input"].splitlines() if ln.startswith(f"{letter}: "))
            assert line[3:] == row["output"][3:] and row["output"][3:] in SAMPLE


def test_bug_rows_agree_and_repair_restores_the_original(alpaca_rows):
    rows = alpaca_rows[0]
    for name in FUNCTIONS:
        repair = next(r for r in rows if r["task"] == "repair" and r["function"] == name)
        pref = next(r for r in rows if r["task"] == "preference" and r["function"] == name)
        detect = next(r for r in rows if r["task"] == "bug_detection" and r["function"] == name)
        assert repair["output"] == _source_of(name)
        assert ast.dump(ast.parse(repair["input"])) != ast.dump(ast.parse(repair["output"]))
        assert repair["bug_kind"] == pref["bug_kind"] in augment.BUGS     # one bug per function
        if detect["has_bug"]:
            assert detect["input"] == repair["input"] and detect["output"].startswith("Yes: ")
        else:
            assert detect["input"] == _source_of(name) and detect["output"] == "No bug found."
        # prompt + chosen is the instruction, the signature and the original body
        mined = next(m for m in mine_source(SAMPLE)[0] if m["name"] == name)
        assert pref["prompt"] + pref["chosen"] == f"{mined['instruction']}\n\n{mined['input']}\n{mined['output']}"
    assert {r["has_bug"] for r in rows if r["task"] == "bug_detection"} == {True, False}


def test_completion_and_refactor_rows(alpaca_rows):
    for row in alpaca_rows[0]:
        if row["task"] == "completion":
            assert row["input"] + row["output"] == _source_of(row["function"])
            assert '"""' in row["input"] and row["output"].strip()
        if row["task"] == "refactor":
            assert row["transform"] in augment.AUGMENTATIONS and row["input"] == _source_of(row["function"])
            assert row["output"] != row["input"] and ast.parse(row["output"])


@pytest.mark.parametrize("mode", ["psm", "spm"])
def test_fim_rows_have_sentinels_in_order_and_reassemble(mode):
    rows, skipped = _build(["fim"], fim_rate=1.0, fim_mode=mode)
    assert len(rows) == 4 and not skipped
    for row in rows:
        text = row["input"] + row["output"]
        assert row["fim_mode"] == mode and text.count(FIM_PREFIX) == text.count(FIM_SUFFIX) == text.count(FIM_MIDDLE) == 1
        assert text.index(FIM_PREFIX) < text.index(FIM_SUFFIX) < text.index(FIM_MIDDLE)
        assert row["input"].endswith(FIM_MIDDLE) if mode == "psm" else row["input"].startswith(FIM_PREFIX + FIM_SUFFIX)
        if mode == "psm":
            prefix, rest = text[len(FIM_PREFIX):].split(FIM_SUFFIX)
            suffix, middle = rest.split(FIM_MIDDLE)
        else:
            suffix, rest = text[len(FIM_PREFIX + FIM_SUFFIX):].split(FIM_MIDDLE)
            prefix, middle = rest[:-len(row["output"])], row["output"]
        assert middle == row["output"] and middle.strip()
        assert prefix + middle + suffix == _source_of(row["function"])
    modes = {r["fim_mode"] for seed in range(3) for r in _build(["fim"], seed=seed, fim_rate=1.0, fim_mode="both")[0]}
    assert modes == {"psm", "spm"}


def test_fim_rate_and_counted_skips():
    rows, skipped = _build(["fim"], fim_rate=0.0)
    assert rows == [] and skipped == {"fim:not_sampled": 4}
    bare = "def f(a, b):\n    c = a + b\n    return c\n\n\ndef g(x):\n    return x\n"
    rows, skipped = _build(tasks.TASK_NAMES, record={"content": bare, "path": "b.py"}, fim_rate=1.0)
    assert {r["task"] for r in rows} == {"completion", "fim", "variable_naming", "repair", "refactor", "bug_detection"}
    for task in ("function_impl", "docstring", "code_search", "preference"):
        assert skipped[f"{task}:no_docstring"] == 2, (task, skipped)
    assert skipped["type_inference:no_annotations"] == 2 and skipped["test_generation:no_tests"] == 2
    assert skipped["completion:too_short"] == 1 and skipped["variable_naming:no_locals"] == 1
    assert _build(record={"content": "def f(:\n", "path": "x.py"})[1] == {"file:unparsable": 1}
    assert _build(record={"content": "x = 1", "language": "JavaScript"})[1] == {"file:not_python": 1}
    many = "\n".join(f"def f{i}(x):\n    y = x + {i}\n    return y\n" for i in range(5))
    rows, skipped = _build(["repair"], record={"content": many}, max_functions_per_file=3)
    assert len(rows) == 3 and skipped == {"file:over_max_functions": 2}


def test_unknown_task_and_bad_options_raise():
    with pytest.raises(ValueError, match="known tasks: function_impl, completion"):
        _build(["function_impl", "summarise"])
    with pytest.raises(ValueError, match="row_format"):  # the data_pipeline field's name
        tasks.TaskOptions(row_format="sharegpt")
    with pytest.raises(ValueError, match="unknown augmentations"):
        tasks.TaskOptions(bug_kinds=("typo",))


def test_rows_are_deterministic_and_tasks_independent():
    first, _ = _build(seed=11, fim_mode="both")
    again, _ = _build(seed=11, fim_mode="both")
    assert json.dumps(first) == json.dumps(again)
    other, _ = _build(seed=12, fim_mode="both")
    assert json.dumps(first) != json.dumps(other)
    # A task's rows do not depend on which other tasks are built alongside it.
    alone, _ = _build(["fim", "repair"], seed=11, fim_mode="both")
    assert alone == [r for r in first if r["task"] in ("repair", "fim")]


def test_chat_format_rows():
    rows, _ = _build(["docstring", "preference"], row_format="chat", system_prompt="You write Python.")
    for row in rows:
        if row["task"] == "preference":
            assert isinstance(row["prompt"], str) and isinstance(row["chosen"], str)
            continue
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["system", "user", "assistant"] and "instruction" not in row
        assert row["messages"][1]["content"].startswith("Write a docstring for this Python function.\n\ndef ")


def test_test_generation_without_sandbox_uses_only_doctests(alpaca_rows):
    rows = [r for r in alpaca_rows[0] if r["task"] == "test_generation"]
    assert [r["function"] for r in rows] == FUNCTIONS and {r["test_origin"] for r in rows} == {"doctest"}
    get = {r["function"]: r["output"] for r in rows}
    assert get["mean"] == ("def test_mean():\n    assert mean([1, 2, 3]) == 2.0\n    try:\n        mean([])\n"
                           "    except ValueError:\n        pass\n    else:\n        raise AssertionError('expected ValueError')\n")
    assert get["join_fields"] == "def test_join_fields():\n    assert join_fields([\"a\", \"b,c\"]) == 'a,\"b,c\"'\n"


def test_sandbox_checked_rows():
    """With the sandbox on: tests pass against the original and fail against a bug, injected
    bugs change an output, and behavioural refactors were run."""
    rows, skipped = _build(["test_generation", "repair", "refactor"], seed=2, check_with_sandbox=True)
    assert not skipped
    tests = {r["function"]: r for r in rows if r["task"] == "test_generation"}
    repairs = {r["function"]: r for r in rows if r["task"] == "repair"}
    assert any("execution" in r["test_origin"] for r in tests.values())
    programs = []
    for name, row in tests.items():
        call = f"\ntest_{name}()\n"
        programs.append(Program(code=SAMPLE, tests=row["output"] + call))
        programs.append(Program(code=SAMPLE + "\n" + repairs[name]["input"], tests=row["output"] + call))
    results = run_programs(programs, execution.default_limits(), workers=2, progress=False)
    assert [r.passed for r in results[0::2]] == [True] * 4                  # the tests pass on the original
    assert sum(not r.passed for r in results[1::2]) >= 3                    # and mostly catch the bug
    assert all(r["verified"] is True for r in repairs.values())
    for row in rows:
        if row["task"] == "refactor" and row["transform"] in augment.BEHAVIOURAL:
            assert row["verified"] is True


def test_build_tasks_on_stdlib_files_without_errors():
    """Real files: every row has its fields, no builder raised (no "error_" skips)."""
    root = stdlib_root()
    files = [f for f in list_source_files(root) if f.stat().st_size <= 20000][::25][:12]
    total = 0
    for i, path in enumerate(files):
        record = {"content": path.read_text(encoding="utf-8"), "path": path.relative_to(root).as_posix()}
        rows, skipped = tasks.build_tasks(record, tasks.TASK_NAMES, random.Random(i), tasks.TaskOptions(fim_rate=1.0))
        assert not [k for k in skipped if ":error_" in k], (record["path"], skipped)
        for row in rows:
            fields = ("prompt", "chosen", "rejected") if row["task"] == "preference" else ("instruction", "output")
            assert BASE_KEYS <= set(row) and all(isinstance(row[f], str) and row[f] for f in fields)
        total += len(rows)
    assert total > 100


def _worker(args):
    record, seed = args
    return tasks.build_tasks(record, tasks.TASK_NAMES, random.Random(seed), tasks.TaskOptions())


def test_build_tasks_runs_in_a_worker_process():
    pickle.dumps((tasks.build_tasks, tasks.TaskOptions(), random.Random(0)))
    with multiprocessing.get_context("fork").Pool(1) as pool:
        rows, skipped = pool.map(_worker, [(RECORD, 4)])[0]
    assert (rows, skipped) == _build(seed=4)


def test_rows_do_not_depend_on_string_hashing():
    """A fresh interpreter with another PYTHONHASHSEED builds the same rows (no set-order leaks)."""
    script = ("import json, random, sys\nfrom codejax.codedata import tasks\n"
              "record = json.load(sys.stdin)\n"
              "rows, _ = tasks.build_tasks(record, tasks.TASK_NAMES, random.Random(5), tasks.TaskOptions(fim_mode='both'))\n"
              "print(json.dumps(rows))\n")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run([sys.executable, "-c", script], input=json.dumps(RECORD), capture_output=True, text=True,
                          env=env, check=True, timeout=120)
    assert json.loads(done.stdout) == _build(seed=5, fim_mode="both")[0]


def test_tool_repair_trajectories_show_what_the_python_tool_replies():
    """The trajectory's tool turns are the sandbox's real replies: the python environment gives the same."""
    from codejax.data.tools import format_assistant
    from codejax.rl.tool_envs import make_env
    rows, skipped = _build(["tool_repair"], check_with_sandbox=True)
    assert rows and sum(skipped.values()) + len(rows) == len(FUNCTIONS), skipped
    env = make_env("python", {"prompt": ""})
    for row in rows:
        messages = row["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
        assert row["tools"][0]["function"]["name"] == "python" and row["verified"] is True
        for i in (1, 3):
            assert env.step(format_assistant("", messages[i]["tool_calls"]))[0] == messages[i + 1]["content"]
        assert messages[2]["content"] != messages[4]["content"]  # the bug shows, the fix does not
        assert _source_of(row["function"]).rstrip() in messages[5]["content"]
        assert f"should print `{messages[4]['content']}`" in messages[0]["content"]
