"""Environments for multi-turn RL (the python tool, unit-test feedback), the arith_tool task and exact_answer."""
import pytest

from codejax.data.tools import format_assistant
from codejax.rl.environments import arith_tool_chats, arith_tool_prompts
from codejax.rl.rewards import get_reward
from codejax.rl.tool_envs import ENVS, PythonEnv, env_tools, make_env, register_env


def _call(code, name="python"):
    return format_assistant("", [{"name": name, "arguments": {"code": code}}])


def test_python_runs_each_call_in_the_sandbox_and_replies_with_output_or_the_error_line():
    env = make_env("python", {"prompt": "q"}, timeout_s=2.0)
    assert env.reset({"prompt": "What is 2 + 2?"}) == "What is 2 + 2?"
    assert env.step(_call("print(2 + 2)")) == ("4", 0.0, False)
    obs, _, done = env.step(_call("import os\nprint(len(os.listdir('/')) >= 0)\nprint(undefined)"))
    assert obs == "True\nNameError: name 'undefined' is not defined" and not done
    assert env.step(_call("x = 1"))[0] == "(no output)"
    two = format_assistant("both", [{"name": "python", "arguments": {"code": "print(1)"}},
                                    {"name": "python", "arguments": {"code": "print(2)"}}])
    assert env.step(two)[0] == "1\n2"
    assert (env.tool_calls, env.tool_errors) == (5, 1)
    assert env.step("The answer is 4.") == (None, 0.0, True)


def test_python_tells_the_policy_what_was_wrong_with_a_call():
    env = make_env("python", {"prompt": "q"}, timeout_s=0.5, max_output_chars=60)
    assert env.step(_call("1", name="bash"))[0] == "error: there is no tool 'bash'; the tools: python"
    assert "not valid JSON" in env.step("<tool_call>\n{'name': 'python'}\n</tool_call>")[0]
    assert "not closed" in env.step('<tool_call>\n{"name": "python", "arguments": {"code": "1"}}')[0]
    assert env.step(format_assistant("", [{"name": "python", "arguments": {"src": "1"}}]))[0] == \
        "error: python needs a string argument 'code'"
    assert env.step(_call("while True: pass"))[0].startswith("timed out")
    long = env.step(_call("print('y' * 5000)"))[0]
    assert long.startswith("y" * 60) and long.endswith("[4940 characters cut]")
    assert env.tool_errors == 5


def test_unit_tests_feedback_then_a_passing_submission():
    row = {"prompt": "Write add(a, b).", "tests": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]}
    env = make_env("unit_tests", row)
    env.reset(row)
    obs, reward, done = env.step("```python\ndef add(a, b):\n    return a - b\n```")
    assert (reward, done) == (0.0, False)
    assert obs == "1 of 2 tests failed. First failure: assert add(1, 2) == 3\nAssertionError"
    assert env.step("```python\ndef add(a, b):\n    return a + b\n```") == (None, 1.0, True)
    assert env_tools("unit_tests") == [] and env_tools("python")[0]["function"]["name"] == "python"


def test_registering_environments():
    with pytest.raises(ValueError, match="already registered"):
        register_env("python")(PythonEnv)
    with pytest.raises(ValueError, match=r"rl.env='nope'.*registered: \['python', 'unit_tests'"):
        make_env("nope", {})

    @register_env("test_echo")
    class Echo:
        tools = []

        def __init__(self, row, **_):
            self.tool_calls = self.tool_errors = 0

        def reset(self, row):
            return row["prompt"]

        def step(self, action):
            return action, 0.5, False

    try:
        assert make_env("test_echo", {"prompt": "p"}, timeout_s=1).step("a") == ("a", 0.5, False)
    finally:
        del ENVS["test_echo"]


def test_arith_tool_trajectories_show_what_the_python_environment_replies():
    """Every tool turn of the SFT rows is what the sandbox-backed environment answers to that call."""
    rows = arith_tool_chats(60, seed=1)
    kinds = {"direct": 0, "typo": 0, "two": 0}
    env = make_env("python", {"prompt": ""})
    for row in rows:
        messages = row["messages"]
        calls = [m for m in messages if m.get("tool_calls")]
        kinds["direct"] += not calls
        kinds["two"] += len(calls) == 2 and "SyntaxError" not in str(messages)
        kinds["typo"] += "SyntaxError" in str(messages)
        for i, m in enumerate(messages):
            if m.get("tool_calls"):
                assert env.step(format_assistant("", m["tool_calls"]))[0] == messages[i + 1]["content"]
        assert row["tools"] == env_tools("python")
    assert all(kinds.values()), kinds
    direct = arith_tool_chats(200, seed=2, direct_fraction=1.0)
    assert not any(m.get("tool_calls") for r in direct for m in r["messages"])


def test_arith_tool_splits_are_disjoint_and_answers_are_right():
    train = {r["prompt"] for r in arith_tool_prompts(3000, seed=0, split="train")}
    held = arith_tool_prompts(300, seed=0, split="held_out")
    assert not train & {r["prompt"] for r in held}
    for row in held[:20]:
        a, op, b = row["prompt"][len("What is "):-1].split()
        assert int(row["answer"]) == eval(f"{a} {op} {b}")  # noqa: S307 - our own digits


def test_exact_answer():
    fn = get_reward("exact_answer")
    assert fn(["q"] * 6, ["10063", "The answer is 10063.", "10063 or 5", "-7", "abc", " x "],
              answer=["10063", "10063", "10063", "-7", "abd", "x"]) == [1.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    assert fn(["q"], ["1"], answer=[None]) == [None]
    with pytest.raises(ValueError, match="'answer' column"):
        fn(["q"], ["1"])
