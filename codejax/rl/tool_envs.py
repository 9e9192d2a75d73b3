"""Environments for multi-turn RL: the policy acts in turns, the environment answers, registered by name.

    env = make_env("python", row, timeout_s=5.0)
    first_user_turn = env.reset(row)
    observation, reward, done = env.step(assistant_turn_text)

An environment is an object with
- `tools`: the tool schemas shown to the policy in the system turn (codejax/data/tools.py), or [];
- `reset(row) -> str`: the episode's first user message (from the prompt row);
- `step(action) -> (observation | None, reward, done)`: `action` is an assistant turn's text; the
  observation becomes a `tool` turn; `reward` is this turn's (per-turn shaping; the episode's
  reward is the sum, plus rl.rewards on the final answer); `done` ends the episode.
- counters `tool_calls` and `tool_errors` (train/tool_calls, train/tool_errors).
Register one with `@register_env("name")` on a class taking `(row, **settings)` in a module named in
rl.reward_modules. Each episode gets its own instance; `step` runs in a worker thread (several
episodes' steps at once), so an environment must not share mutable state between instances.

Built in:
- `python`: a Python interpreter tool. A turn with <tool_call>s runs each `python` call's `code` in
  codejax.sandbox (a fresh process per call, `timeout_s` each) and replies with its stdout and, if
  it failed, the error line (`NameError: name 'x' is not defined`, `timed out ...`), cut to
  `max_output_chars`. A turn without a call is the final answer (done; reward 0: rl.rewards score it).
  Unknown tools and calls that are not JSON get an error reply, as a real tool runtime would.
- `unit_tests`: no tools; each turn is a submission. Its code (the ```python block, else the text)
  runs against the row's `tests` in the sandbox: all pass -> reward 1, done; else the reply says
  which test failed and why, and the policy tries again (rl.max_turns bounds the tries).
"""
from __future__ import annotations

import os
from typing import Any, Callable

from codejax.data.tools import function_schema, parse_tool_calls
from codejax.evaluation.benchmarks import extract_code
from codejax.rl.rewards import test_blocks
from codejax.sandbox import Limits, Program, Status, run_programs

ENVS: dict[str, Callable[..., Any]] = {}

PYTHON_TOOL = function_schema("python", "Run Python code; returns what it prints.", {"code": {"type": "string"}})


def register_env(name: str):
    def decorate(cls):
        if name in ENVS:
            raise ValueError(f"environment {name!r} is already registered (by {ENVS[name].__module__})")
        ENVS[name] = cls
        return cls
    return decorate


def make_env(name: str, row: dict, **settings):
    if name not in ENVS:
        raise ValueError(f"rl.env={name!r} is not a registered environment; registered: {sorted(ENVS)} "
                         "(one of your own: @register_env it in a module named in rl.reward_modules)")
    return ENVS[name](row, **settings)


def env_tools(name: str) -> list[dict]:
    """The tool schemas environment `name` shows the policy (a class attribute)."""
    return list(getattr(ENVS[name], "tools", []) or [])


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n... [{len(text) - limit} characters cut]"


def run_output(result) -> str:
    """What the python tool replies for a sandbox result: stdout, then the error line if it failed."""
    out = result.stdout.rstrip("\n")
    if result.status is Status.PASSED:
        return out or "(no output)"
    if result.status is Status.TIMEOUT:
        error = f"timed out ({result.reason})"
    elif result.status is Status.ERROR:
        error = f"the sandbox failed: {result.reason}"
    else:
        error = result.reason or f"failed ({result.status})"
    return f"{out}\n{error}" if out else error


class _SandboxEnv:
    tools: list[dict] = []

    def __init__(self, row: dict, timeout_s: float = 5.0, memory_mb: int = 1024, max_output_chars: int = 1000,
                 sandbox_options: dict | None = None, **_):
        self.row, self.timeout_s, self.memory_mb = row, timeout_s, memory_mb
        self.max_output_chars, self.sandbox_options = max_output_chars, sandbox_options or {}
        self.tool_calls = self.tool_errors = 0

    def reset(self, row: dict) -> str:
        self.row = row
        return row["prompt"]

    def _run(self, programs: list[Program]):
        return run_programs(programs, Limits(timeout_s=self.timeout_s, memory_mb=self.memory_mb),
                            workers=min(len(programs), os.cpu_count() or 1), progress=False, **self.sandbox_options)


@register_env("python")
class PythonEnv(_SandboxEnv):
    tools = [PYTHON_TOOL]

    def step(self, action: str):
        turn = parse_tool_calls(action)
        if not turn.calls and not turn.errors:
            return None, 0.0, True  # the final answer
        replies: list[str | None] = []
        programs = []
        for call in turn.calls:
            self.tool_calls += 1
            code = call["arguments"].get("code")
            if call["name"] != "python":
                replies.append(f"error: there is no tool {call['name']!r}; the tools: python")
            elif not isinstance(code, str):
                replies.append("error: python needs a string argument 'code'")
            else:
                replies.append(None)
                programs.append(Program(code=code, name=f"call{len(programs)}"))
        results = self._run(programs) if programs else []
        ran = iter(results)
        replies = [r if r is not None else run_output(next(ran)) for r in replies]
        replies += [f"error: {e}" for e in turn.errors]
        # errors: calls that could not run, plus programs that failed
        self.tool_errors += len(replies) - len(results) + sum(not r.passed for r in results)
        return _cut("\n".join(replies), self.max_output_chars), 0.0, False


@register_env("unit_tests")
class UnitTestsEnv(_SandboxEnv):
    tools: list[dict] = []

    def step(self, action: str):
        row = self.row
        if row.get("tests") is None:
            raise ValueError("environment 'unit_tests' needs a 'tests' column in every prompt row")
        blocks = test_blocks(row["tests"], row.get("entry_point") or "", row.get("setup") or "", "prompt row")
        code = (row.get("setup") + "\n" if row.get("setup") else "") + extract_code(action)
        self.tool_calls += 1
        results = self._run([Program(code=code, tests=t, name=f"test{j}") for j, t in enumerate(blocks)])
        failed = [(t, r) for t, r in zip(blocks, results) if not r.passed]
        if not failed:
            return None, 1.0, True
        self.tool_errors += 1
        test, result = failed[0]
        shown = test.strip().splitlines()[-1] if test.strip() else "(the program itself)"
        reply = (f"{len(failed)} of {len(blocks)} tests failed. First failure: {shown}\n"
                 f"{run_output(result)}")
        return _cut(reply, self.max_output_chars), 0.0, False
