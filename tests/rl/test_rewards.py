"""Reward functions: the sandboxed unit-test reward against honest and cheating completions,
the static rewards, the registry and the NaN-aware combination (against numpy)."""
import functools
import sys

import numpy as np
import pytest

from codejax.rl import rewards as rw
from codejax.rl.rewards import (REWARDS, as_array, combine_rewards, get_reward, register_reward,
                                single_python_block)
from codejax.sandbox import Result, Status

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox is Linux-only")

ADD_TESTS = ["assert add(2, 3) == 5", "assert add(-1, 1) == 0", "assert add(10, 5) == 15"]
SIGNATURE = "def add(a, b):\n"
HUMANEVAL_TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(0, 0) == 0\n"

# (name, completion, columns of the row, expected reward): run together, as one batch.
ROWS = [
    ("correct", "def add(a, b):\n    return a + b\n", {}, 1.0),
    ("completion_mode", "    return a + b\n", {"code_prefix": SIGNATURE}, 1.0),
    ("one_of_three_fails", "def add(a, b):\n    return 5 if a == 10 else a + b\n", {}, 2 / 3),
    ("two_of_three_fail", "def add(a, b):\n    return 5\n", {}, 1 / 3),
    ("infinite_loop", "def add(a, b):\n    while True:\n        pass\n", {}, 0.0),
    ("prints_true", "print('True')\nprint('.' * 3 + ' OK')\nimport sys\nsys.exit(0)\n", {}, 0.0),
    ("exits_in_function", "import os\ndef add(a, b):\n    os._exit(0)\n", {}, 0.0),
    ("raises_systemexit", "def add(a, b):\n    raise SystemExit(0)\n", {}, 0.0),
    ("syntax_error", "def add(a, b)\n    return a + b\n", {}, 0.0),
    ("empty", "   \n", {}, 0.0),
    ("no_tests", "def add(a, b):\n    return a + b\n", {"tests": None}, None),
    ("setup", "def area(r):\n    return math.pi * r * r\n",
     {"tests": ["assert math.isclose(area(1), math.pi)"], "setup": "import math"}, 1.0),
    ("humaneval_block", "    return a + b\n", {"tests": HUMANEVAL_TEST, "entry_point": "add",
                                                 "code_prefix": SIGNATURE}, 1.0),
    ("humaneval_block_wrong", "    return a * b\n", {"tests": HUMANEVAL_TEST, "entry_point": "add",
                                                       "code_prefix": SIGNATURE}, 0.0),
    ("chat_messages", [{"role": "assistant", "content": "def add(a, b):\n    return b + a\n"}], {}, 1.0),
]
TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def batch(request):
    """Score ROWS with one unit_tests call, recording what was sent to the sandbox."""
    calls = []

    def spy(programs, limits, **kw):
        calls.append((list(programs), limits, kw))
        results = real(calls[-1][0], limits, **kw)
        calls[-1] += (results,)
        return results

    real = rw.run_programs
    rw.run_programs = spy
    try:
        cols = {"tests": [], "code_prefix": [], "setup": [], "entry_point": []}
        for _, _, row, _ in ROWS:
            cols["tests"].append(row.get("tests", ADD_TESTS))
            for k in ("code_prefix", "setup", "entry_point"):
                cols[k].append(row.get(k))
        prompts = ["Write add." for _ in ROWS]
        scores = rw.unit_tests(prompts, [c for _, c, _, _ in ROWS], **cols, sandbox_timeout_s=TIMEOUT_S,
                               workers=2, unknown_column=[0] * len(ROWS))
    finally:
        rw.run_programs = real
    return dict(zip([name for name, *_ in ROWS], scores)), calls


@linux_only
@pytest.mark.parametrize("name,want", [(name, want) for name, _, _, want in ROWS], ids=[r[0] for r in ROWS])
def test_unit_tests_reward(batch, name, want):
    scores, _ = batch
    if want is None:
        assert scores[name] is None
    else:
        assert scores[name] == pytest.approx(want, abs=0), name  # exact fractions


@linux_only
def test_unit_tests_batches_everything_into_one_sandbox_call(batch):
    _, calls = batch
    assert len(calls) == 1
    programs, limits, kw, results = calls[0]
    assert limits.timeout_s == TIMEOUT_S and kw["workers"] == 2 and kw["progress"] is False
    codes = [p.code for p in programs]
    # Nothing is run for the non-compiling, the empty and the test-less rows.
    assert not any(c.startswith("def add(a, b)\n") for c in codes) and "   \n" not in codes
    # One program per assert: the fraction cannot be faked by a single early exit.
    assert sum(c == "def add(a, b):\n    return 5\n" for c in codes) == 3
    assert {p.tests for p in programs if p.code == "def add(a, b):\n    return 5\n"} == set(ADD_TESTS)
    # correct and completion_mode are the same code once the prefix is added: run once.
    assert sum(p.code == "def add(a, b):\n    return a + b\n" and p.tests in ADD_TESTS for p in programs) == 3
    # The infinite loop was stopped by the timeout, each of its three programs.
    looping = [r for p, r in zip(programs, results) if "while True" in p.code]
    assert [r.status for r in looping] == [Status.TIMEOUT] * 3
    assert all(r.wall_s < TIMEOUT_S + 1.0 for r in looping)


def _fake_sandbox(calls):
    def run(programs, limits, **kw):
        calls.append((list(programs), limits))
        return [Result(Status.PASSED if "return a + b" in p.code else Status.FAILED) for p in calls[-1][0]]
    return run


def test_unit_tests_groups_by_timeout_and_dedupes(monkeypatch):
    calls = []
    monkeypatch.setattr(rw, "run_programs", _fake_sandbox(calls))
    good, bad = "def add(a, b):\n    return a + b\n", "def add(a, b):\n    return a - b\n"
    scores = rw.unit_tests(["p"] * 4, [good, good, bad, good], tests=[ADD_TESTS] * 4,
                           sandbox_timeout_s=[1.0, 1.0, 1.0, 3.0])
    assert scores == [1.0, 1.0, 0.0, 1.0]
    assert sorted((lim.timeout_s, len(progs)) for progs, lim in calls) == [(1.0, 6), (3.0, 3)]


def test_unit_tests_sandbox_errors_give_none(monkeypatch, caplog):
    monkeypatch.setattr(rw, "run_programs", lambda programs, limits, **kw: [
        Result(Status.ERROR, reason="cannot start the sandbox") for _ in programs])
    scores = rw.unit_tests(["p", "p"], ["x = 1\n", "def f(:\n"], tests=[["assert x == 1"], ["assert 1"]])
    assert scores == [None, 0.0]
    assert "sandbox failed on 1 of 2" in caplog.text and "cannot start" in caplog.text


def test_unit_tests_bad_columns_are_clear_errors():
    with pytest.raises(ValueError, match="'tests' column"):
        rw.unit_tests(["p"], ["x = 1"])
    with pytest.raises(ValueError, match="column 'tests' has 1 values for 2 completions"):
        rw.unit_tests(["p", "p"], ["x = 1", "x = 2"], tests=[["assert x"]])
    with pytest.raises(ValueError, match="row 0: test 1 .* does not parse"):
        rw.unit_tests(["p"], ["x = 1"], tests=[["assert x", "assert x ==="]])


def test_prompt_files_with_tests_that_do_not_parse_fail_at_load_naming_file_and_line(tmp_path):
    import json

    import ml_collections

    from codejax.rl.prompts import load_prompt_rows
    path = tmp_path / "prompts.jsonl"
    rows = [{"prompt": "def f(x):", "tests": ["assert f(1) == 2"]}, {"prompt": "def g(x):", "tests": "assert g(1) =="}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = ml_collections.ConfigDict({"seed": 0, "rl": {"prompts_path": str(path), "builtin_task": "",
                                                          "eval_fraction": 0.0, "eval_prompts_path": ""}})
    with pytest.raises(ValueError, match=rf"{path}:2: test 0 \(with its setup\) does not parse"):
        load_prompt_rows(config)
    rows[1]["tests"] = ["assert g(1) == 2"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(load_prompt_rows(config)[0]) == 2


def test_eval_prompts_path_is_the_eval_set_and_every_prompt_trains(tmp_path):
    import json

    import ml_collections

    from codejax.rl.prompts import load_prompt_rows
    train, held = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    train.write_text("".join(json.dumps({"prompt": f"p{i}", "tests": ["assert True"]}) + "\n" for i in range(20)))
    held.write_text(json.dumps({"prompt": "q", "tests": ["assert f(1) =="]}) + "\n")
    rl = {"prompts_path": str(train), "builtin_task": "", "eval_fraction": 0.5, "eval_prompts_path": str(held)}
    config = ml_collections.ConfigDict({"seed": 0, "rl": rl})
    with pytest.raises(ValueError, match=rf"{held}:1: test 0"):  # eval rows are checked like training rows
        load_prompt_rows(config)
    held.write_text(json.dumps({"prompt": "q", "tests": ["assert True"]}) + "\n")
    got_train, got_eval = load_prompt_rows(config)
    assert [r["prompt"] for r in got_train] == [f"p{i}" for i in range(20)] and [r["prompt"] for r in got_eval] == ["q"]
    config.rl.prompts_path = ""
    with pytest.raises(ValueError, match="rl.eval_prompts_path is set but rl.prompts_path is not"):
        load_prompt_rows(config)


# ------------------------------------------------------------------ static rewards

def test_syntax_valid():
    got = get_reward("syntax_valid")(["p"] * 4, ["    return 1\n", "    return (\n", "x = 1\n", "x = \0"],
                                     code_prefix=[SIGNATURE, SIGNATURE, None, ""], extra=[1, 2, 3, 4])
    assert got == [1.0, 0.0, 1.0, 0.0]


@pytest.mark.skipif(rw.os.name != "posix", reason="bandit runs as a subprocess")
def test_bandit_clean():
    completions = [
        "def f(x):\n    return x + 1\n",  # clean
        "import subprocess\ndef f(cmd):\n    return subprocess.call(cmd, shell=True)\n",  # B602 high
        "import subprocess\n",  # B404: low severity only
        "    return x +\n",  # does not parse
        "    return x\n",  # clean completion under a prompt bandit flags: the prompt's, not the model's
    ]
    prefixes = ["", "", "", "def f(x):\n", "import pickle\ndef f(x):\n    pickle.loads(x)\n"]
    got = get_reward("bandit_clean")(["p"] * 5, completions, code_prefix=prefixes)
    assert got == [1.0, 0.0, 1.0, None, 1.0]
    strict = functools.partial(get_reward("bandit_clean"), min_severity="low")
    assert strict(["p"], [completions[2]]) == [0.0]


@pytest.mark.parametrize("text,ok", [
    ("```python\ndef f():\n    return 1\n```", True),
    ("Here is the code:\n\n```python\nx = 1\n```\n\nIt sets x.", True),
    ("```py\nx = 1\n```\n", True),
    ("def f():\n    return 1\n", False),  # no fence
    ("```\nx = 1\n```", False),  # untagged
    ("```python\nx = 1\n```\n```python\ny = 2\n```", False),  # two blocks
    ("```python\nx = 1\n", False),  # not closed
    ("```python\n   \n```", False),  # blank
    ("```javascript\nlet x = 1\n```", False),
])
def test_format_single_python_block(text, ok):
    assert single_python_block(text) is ok
    assert get_reward("format")(["p"], [text]) == [float(ok)]


def test_format_regex_column():
    fmt = get_reward("format")
    regex = r"<think>.*?</think>\s*<answer>.*</answer>"
    got = fmt(["p"] * 3, ["<think>a\nb</think> <answer>x</answer>", "<answer>x</answer>", "```python\nx\n```"],
              format_regex=[regex, regex, None])
    assert got == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="row 0: format_regex"):
        fmt(["p"], ["x"], format_regex="(")


# ------------------------------------------------------------------ combination

def _np_combine(per_fn, weights, mode):
    names = list(per_fn)
    n = len(per_fn[names[0]])
    out = np.full(n, np.nan)
    for i in range(n):
        vals = [weights.get(k, 1.0) * per_fn[k][i] for k in names if not np.isnan(per_fn[k][i])]
        if vals:
            out[i] = {"sum": sum, "mean": lambda v: sum(v) / len(v), "min": min}[mode](vals)
    return out


@pytest.mark.parametrize("mode", ["sum", "mean", "min"])
def test_combine_rewards_matches_numpy(mode):
    rng = np.random.default_rng(1)
    per_fn = {k: rng.uniform(-1, 1, 40) for k in ("unit_tests", "format", "bandit_clean")}
    for k, a in per_fn.items():
        a[rng.uniform(size=40) < 0.3] = np.nan
    per_fn["format"][:3] = per_fn["unit_tests"][:3] = per_fn["bandit_clean"][:3] = np.nan  # nothing available
    weights = {"format": 0.1, "bandit_clean": 2.0}
    got = combine_rewards(per_fn, weights, mode)
    want = _np_combine(per_fn, weights, mode)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert np.all(np.isnan(got[:3]))


def test_combine_rewards_min_requires_every_reward():
    # A completion that games the format reward but fails its tests scores its failure.
    per_fn = {"unit_tests": [0.0, 1.0, None], "format": [1.0, 1.0, 1.0]}
    np.testing.assert_array_equal(combine_rewards(per_fn, mode="min"), [0.0, 1.0, 1.0])
    np.testing.assert_array_equal(combine_rewards(per_fn, mode="sum"), [1.0, 2.0, 1.0])


def test_combine_rewards_errors():
    with pytest.raises(ValueError, match="sum.*mean.*min"):
        combine_rewards({"a": [1.0]}, mode="max")
    with pytest.raises(ValueError, match="'typo'"):
        combine_rewards({"a": [1.0]}, {"typo": 2.0})
    with pytest.raises(ValueError, match="equal length"):
        combine_rewards({"a": [1.0], "b": [1.0, 2.0]})
    with pytest.raises(ValueError, match="at least one"):
        combine_rewards({})


def test_as_array_maps_none_to_nan():
    got = as_array([1.0, None, 0.5])
    assert got.dtype == np.float64 and np.isnan(got[1]) and got[0] == 1.0 and got[2] == 0.5


# ------------------------------------------------------------------ registry

def test_registry_has_the_builtins_and_names_them_on_error():
    assert {"unit_tests", "syntax_valid", "bandit_clean", "format"} <= set(REWARDS)
    with pytest.raises(ValueError, match=r"unknown reward 'pass_rate'.*'unit_tests'"):
        get_reward("pass_rate")
    with pytest.raises(ValueError, match="already registered"):
        register_reward("format")(lambda prompts, completions, **_: [])


def test_user_registered_reward_works_through_the_registry():
    try:
        @register_reward("test_mentions_entry_point")
        def mentions(prompts, completions, *, entry_point, **_):
            return [None if ep is None else float(ep in c) for c, ep in zip(completions, entry_point)]

        fn = get_reward("test_mentions_entry_point")
        got = as_array(fn(["p"] * 3, ["def add(", "def sub(", "x"], entry_point=["add", "add", None],
                          tests=[[], [], []], another_column=[1, 2, 3]))
        np.testing.assert_array_equal(got[:2], [1.0, 0.0])
        assert np.isnan(got[2])
        combined = combine_rewards({"mine": got, "format": np.zeros(3)}, mode="mean")
        np.testing.assert_array_equal(combined, [0.5, 0.0, 0.0])
    finally:
        REWARDS.pop("test_mentions_entry_point", None)


# ------------------------------------------------------------------ what the code rewards run (issue 15, item 12)

def _rl_section(**fields):
    from codejax.config import base_config
    rc = base_config().rl
    for key, value in fields.items():
        setattr(rc, key, value)
    return rc


def _recording_sandbox(monkeypatch):
    """The programs unit_tests sends, each passing when it defines add correctly."""
    calls = []
    monkeypatch.setattr(rw, "run_programs", _fake_sandbox(calls))
    return lambda: [p.code for progs, _ in calls for p in progs]


CHAT_ANSWER = "Here it is:\n```python\ndef add(a, b):\n    return a + b\n```\nIt adds."


def test_chat_setting_runs_the_fenced_block(monkeypatch):
    codes = _recording_sandbox(monkeypatch)
    assert rw.unit_tests(["Write add."], [CHAT_ANSWER], tests=[ADD_TESTS]) == [0.0]  # prose does not compile
    assert codes() == []
    assert rw.unit_tests(["Write add."], [CHAT_ANSWER], tests=[ADD_TESTS], chat=True) == [1.0]
    assert set(codes()) == {"def add(a, b):\n    return a + b"}
    assert get_reward("syntax_valid")(["p"], [CHAT_ANSWER], chat=True) == [1.0]
    assert get_reward("syntax_valid")(["p"], [CHAT_ANSWER]) == [0.0]


def test_reward_spec_completion_mode_defaults_code_prefix_to_the_prompt(monkeypatch):
    codes = _recording_sandbox(monkeypatch)
    from codejax.rl.rollout import RewardSpec
    spec = RewardSpec.from_config(_rl_section(rewards="unit_tests"))
    prompts = [SIGNATURE, SIGNATURE, "unused prompt\n"]
    total, parts = spec(prompts, ["    return a + b\n", "    return a + b\n", "    return a + b\n"],
                        {"tests": [ADD_TESTS] * 3, "code_prefix": [None, None, SIGNATURE]}, ["eos"] * 3)
    np.testing.assert_array_equal(parts["unit_tests"], [1.0, 1.0, 1.0])
    assert set(codes()) == {SIGNATURE + "    return a + b\n"}  # a given code_prefix wins over the prompt
    # No code_prefix column at all (the README says it is optional): still prompt + completion.
    total, _ = spec([SIGNATURE], ["    return a + b\n"], {"tests": [ADD_TESTS]}, ["eos"])
    np.testing.assert_array_equal(total, [1.0])


def test_reward_spec_chat_mode_extracts_the_code_and_adds_no_prompt(monkeypatch):
    codes = _recording_sandbox(monkeypatch)
    from codejax.rl.rollout import RewardSpec
    spec = RewardSpec.from_config(_rl_section(rewards="unit_tests,format", chat=True))
    total, parts = spec(["Write add."], [CHAT_ANSWER], {"tests": [ADD_TESTS]}, ["eos"])
    np.testing.assert_array_equal(parts["unit_tests"], [1.0])
    np.testing.assert_array_equal(parts["format"], [1.0])  # format still reads the whole answer
    assert set(codes()) == {"def add(a, b):\n    return a + b"}


# ------------------------------------------------------------------ rl.reward_modules

USER_MODULE = '''
from codejax.rl.rewards import register_reward


@register_reward("{name}")
def length_reward(prompts, completions, **_):
    return [float(len(c)) for c in completions]
'''


@pytest.fixture()
def user_reward(tmp_path):
    """A reward module file registering a reward; its registration is undone afterwards."""
    name = f"test_user_len_{tmp_path.name}"
    path = tmp_path / "my_rewards.py"
    path.write_text(USER_MODULE.format(name=name))
    yield name, path
    REWARDS.pop(name, None)
    for key in [k for k, m in sys.modules.items() if getattr(m, "__file__", None) == str(path)]:
        del sys.modules[key]


def test_reward_module_from_a_path_registers_its_rewards(user_reward):
    from codejax.rl.rollout import RewardSpec
    name, path = user_reward
    with pytest.raises(ValueError, match=rf"unknown reward '{name}'.*rl.reward_modules"):
        RewardSpec.from_config(_rl_section(rewards=name))
    rc = _rl_section(rewards=name, reward_modules=f" {path} ")
    spec = RewardSpec.from_config(rc)
    _, parts = spec(["p", "p"], ["ab", "abcd"], {}, ["eos", "eos"])
    np.testing.assert_array_equal(parts[name], [2.0, 4.0])
    RewardSpec.from_config(rc)  # imported once: a second job in this process does not re-register


def test_reward_module_by_name(user_reward, monkeypatch):
    name, path = user_reward
    monkeypatch.syspath_prepend(str(path.parent))
    assert rw.import_reward_modules("json, my_rewards") == ["json", "my_rewards"]
    assert name in REWARDS


@pytest.mark.parametrize("source,spec,match", [
    (None, "codejax_no_such_reward_module", r"rl.reward_modules: no module 'codejax_no_such_reward_module' on sys.path"),
    (None, "missing/rewards.py", r"rl.reward_modules: no file '.*missing/rewards.py'"),
    ("def f(:\n", "{path}", r"rl.reward_modules: importing '.*broken.py' failed: SyntaxError"),
    ("import codejax_no_such_dependency\n", "{path}",
     r"importing '.*broken.py' failed: No module named 'codejax_no_such_dependency'; install"),
    ("raise RuntimeError('needs an API key\\nsecond line')\n", "{path}",
     r"failed: RuntimeError: needs an API key; fix the module$"),
])
def test_reward_module_that_fails_is_a_one_line_error(tmp_path, source, spec, match):
    path = tmp_path / "broken.py"
    if source is not None:
        path.write_text(source)
    with pytest.raises(ValueError, match=match) as err:
        rw.import_reward_modules(spec.format(path=path))
    assert "\n" not in str(err.value)
