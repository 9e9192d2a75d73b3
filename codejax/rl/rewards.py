"""Reward functions for RL on code (GRPO, RLOO, PPO), registered by name.

A reward function has TRL's signature:

    fn(prompts: list[str], completions: list[str], **columns) -> list[float | None]

- `completions[i]` is the text the policy generated for `prompts[i]` (a chat completion given
  as a list of messages counts as the content of its last message).
- `columns` are the prompt dataset's other fields, repeated per completion: each is a list
  aligned with `completions` (`tests=[...]`, `entry_point=[...]`). A function takes the
  columns it needs as keyword arguments and must accept unknown ones (`**_`), since every
  function receives every column. Settings are bound with functools.partial
  (`partial(unit_tests, workers=32)`; `bind_settings` binds only those a function names); a
  scalar where a column is expected applies to all rows.
- `None` means "not applicable" (no tests for this row, code that bandit cannot read). It
  becomes NaN (`as_array`), which `combine_rewards` and the group statistics
  (codejax.losses.group_advantages, rloo_advantages) leave out.

    fn = get_reward("unit_tests")
    r = as_array(fn(prompts, completions, tests=tests, code_prefix=prompts))
    total = combine_rewards({"unit_tests": r, "format": f}, {"format": 0.1}, mode="sum")

Built-ins: unit_tests, syntax_valid, bandit_clean, format. Register your own with
`@register_reward("name")` in a module of yours, and name that module in `rl.reward_modules`
(an importable name or a .py path): the RL jobs import it (`import_reward_modules`) before
they look up `rl.rewards`.

The rewards that run or read code (unit_tests, syntax_valid, bandit_clean) take a `chat`
setting: with `chat=True` (the RL jobs bind `rl.chat`) a completion is a chat answer and its
code is the fenced block (codejax.evaluation.extract_code, as the eval job reads answers).
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.util
import inspect
import logging
import numbers
import os
import re
import sys
import warnings
from typing import Any, Callable, Sequence

import numpy as np

from codejax.evaluation.benchmarks import extract_code
from codejax.sandbox import Limits, Program, Status, run_programs

log = logging.getLogger(__name__)

RewardFn = Callable[..., list]
REWARDS: dict[str, RewardFn] = {}
COMBINE_MODES = ("sum", "mean", "min")



def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator: make `fn` available as `get_reward(name)`. A name can be registered once."""
    def decorate(fn: RewardFn) -> RewardFn:
        if name in REWARDS:
            raise ValueError(f"reward {name!r} is already registered (by {REWARDS[name].__module__}."
                             f"{getattr(REWARDS[name], '__qualname__', REWARDS[name])})")
        REWARDS[name] = fn
        return fn
    return decorate


def get_reward(name: str) -> RewardFn:
    try:
        return REWARDS[name]
    except KeyError:
        raise ValueError(f"unknown reward {name!r}; registered: {sorted(REWARDS)} (a reward of your own: "
                         "@register_reward it in a module named in rl.reward_modules)") from None


def _is_path(name: str) -> bool:
    return name.endswith(".py") or "/" in name or os.sep in name


def _import_file(path: str):
    """A .py file as a module, once per file: a second import would register its rewards twice."""
    path = os.path.abspath(path)
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    # Named after the file and its place, so two files called rewards.py do not collide.
    name = f"codejax_reward_module_{stem}_{hashlib.sha256(path.encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before exec, as `import` does (dataclasses and pickling look it up)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def import_reward_modules(names: str, field: str = "rl.reward_modules") -> list[str]:
    """Import the comma-separated modules in `names` (importable names or .py file paths), so the
    rewards they register with @register_reward can be named in rl.rewards; returns the module names.
    A module that fails to import is a one-line ValueError naming `field` and the module."""
    imported = []
    for name in (n.strip() for n in names.split(",")):
        if not name:
            continue
        if _is_path(name) and not os.path.isfile(name):
            raise ValueError(f"{field}: no file {os.path.abspath(name)!r}; give an existing .py path or a module name")
        try:
            module = _import_file(name) if _is_path(name) else importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name.split(".")[0] and e.name != name:
                raise ValueError(f"{field}: importing {name!r} failed: {e}; install that package") from e
            raise ValueError(f"{field}: no module {name!r} on sys.path; run from its folder, add that folder "
                             "to PYTHONPATH, or give the module's .py path") from e
        except Exception as e:  # noqa: BLE001 - whatever the user's module raises is reported alike
            first = (str(e).splitlines() or [""])[0]
            raise ValueError(f"{field}: importing {name!r} failed: {type(e).__name__}: {first}; "
                             "fix the module") from e
        imported.append(module.__name__)
    return imported


def bind_settings(fn: RewardFn, **settings) -> RewardFn:
    """`fn` with the `settings` its signature names bound by functools.partial (the others are dropped),
    so one set of job settings (sandbox workers, timeouts) reaches every reward that takes them."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin or C callable: nothing to bind
        return fn
    named = {k: v for k, v in settings.items() if k in params and params[k].kind is not inspect.Parameter.VAR_KEYWORD}
    return functools.partial(fn, **named) if named else fn


def as_array(rewards: Sequence[float | None]) -> np.ndarray:
    """A reward function's list as float64, None -> NaN."""
    return np.asarray([np.nan if r is None else r for r in rewards], np.float64)


def combine_rewards(per_fn: dict[str, Any], weights: dict[str, float] | None = None,
                    mode: str = "sum") -> np.ndarray:
    """One reward per completion from several: w_k * r_k combined over the rewards k available.

    per_fn: name -> rewards [n] (NaN or None = not applicable); weights: name -> w (default 1).
        sum   nansum_k w_k r_k        (TRL's reward_weights)
        mean  nanmean_k w_k r_k       (the mean over the available rewards, not a weighted mean)
        min   nanmin_k w_k r_k        the reward-hacking-resistant ensemble: a completion scores
                                      only as well as its worst reward, so it must satisfy every
                                      one (use rewards on the same scale, e.g. [0, 1])
    A row with no available reward stays NaN.
    """
    if mode not in COMBINE_MODES:
        raise ValueError(f"mode={mode!r}; expected one of {COMBINE_MODES}")
    if not per_fn:
        raise ValueError("combine_rewards needs at least one reward")
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(per_fn))
    if unknown:
        raise ValueError(f"weights for rewards that are not given: {unknown}; given: {sorted(per_fn)}")
    arrays = {k: as_array(list(v)) if not isinstance(v, np.ndarray) else v.astype(np.float64)
              for k, v in per_fn.items()}
    lengths = {k: a.shape for k, a in arrays.items()}
    if len(set(lengths.values())) != 1 or any(len(s) != 1 for s in lengths.values()):
        raise ValueError(f"rewards must be 1-d and of equal length, got shapes {lengths}")
    stacked = np.stack([arrays[k] * float(weights.get(k, 1.0)) for k in arrays])
    none_available = np.all(np.isnan(stacked), axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: handled below
        out = {"sum": np.nansum, "mean": np.nanmean, "min": np.nanmin}[mode](stacked, axis=0)
    out[none_available] = np.nan
    return out


# ------------------------------------------------------------------ helpers

def _text(completion) -> str:
    """A completion's text: a string, or a chat completion (a list of messages) -> the last content."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (list, tuple)) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    raise TypeError(f"a completion must be a string or a list of chat messages, got {type(completion).__name__}")


def _code(completion, chat: bool) -> str:
    """The code a completion amounts to: its text, or with `chat` the fenced block of the answer."""
    text = _text(completion)
    return extract_code(text) if chat else text


def _column(name: str, value, n: int, default=None) -> list:
    """A column aligned with n completions; None -> default per row, a scalar -> every row."""
    if value is None:
        return [default] * n
    if isinstance(value, (str, bytes, numbers.Number)):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"column {name!r} has {len(value)} values for {n} completions")
    return [default if v is None else v for v in value]


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):  # ValueError: NUL bytes
        return False
    return True


def _compiles(code: str) -> bool:
    try:
        compile(code, "<completion>", "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return False
    return True


_DEFINES_CHECK = re.compile(r"^def[ \t]+check[ \t]*\(", re.M)


def test_blocks(row_tests, entry_point, setup: str, where: str) -> list[str]:
    """The test programs of one row: one per assert (a list), or the single block (a string).
    `where` names the row in errors ("prompts.jsonl:12", "row 3")."""
    if isinstance(row_tests, str):
        blocks = [row_tests]
        if entry_point and _DEFINES_CHECK.search(row_tests):  # HumanEval layout: check(candidate)
            blocks = [f"{row_tests}\n\ncheck({entry_point})\n"]
    elif isinstance(row_tests, (list, tuple, np.ndarray)):
        blocks = list(row_tests)
    else:
        raise ValueError(f"{where}: column 'tests' must be a list of assert strings or one test block, "
                         f"got {type(row_tests).__name__}")
    out = []
    for j, block in enumerate(blocks):
        if not isinstance(block, str):
            raise ValueError(f"{where}: test {j} of column 'tests' is {type(block).__name__}, not a string")
        test = f"{setup}\n{block}" if setup else block
        try:
            compile(test, f"<{where} test {j}>", "exec")
        except (SyntaxError, ValueError) as e:  # the dataset's fault, not the model's: say so
            raise ValueError(f"{where}: test {j} (with its setup) does not parse: {e}") from None
        out.append(test)
    return out


# ------------------------------------------------------------------ built-ins

@register_reward("unit_tests")
def unit_tests(prompts, completions, *, tests=None, code_prefix=None, setup=None, entry_point=None,
               sandbox_timeout_s=None, workers: int | None = None, memory_mb: int = 1024,
               default_timeout_s: float = 5.0, sandbox_options: dict | None = None, chat: bool = False, **_):
    """Fraction of the row's tests that pass when the code runs in codejax.sandbox.

    The code is `code_prefix[i] + completion` (code_prefix defaults to ""). In completion mode
    the policy continues a function signature: that signature (usually the prompt itself) goes
    in `code_prefix`; the RL jobs default a missing code_prefix to the prompt (RewardSpec). With
    `chat=True` the completion is a chat answer and only its fenced code block is run.

    Columns:
      tests              a list of assert strings (MBPP's test_list): each runs as its own
                         sandbox program, after the code, and the reward is the fraction that
                         pass; or one string, a single test block scored 0 or 1 (with
                         `entry_point` and a `def check(` in it, HumanEval's layout,
                         `check(entry_point)` is appended). None or [] -> None.
      setup              optional code run before each test (MBPP's test_setup_code, imports)
      entry_point        optional; see tests
      sandbox_timeout_s  optional wall-clock limit per program (default `default_timeout_s`)

    Settings (bound with functools.partial; the RL jobs bind rl.sandbox_workers,
    rl.sandbox_timeout_s and rl.chat): `workers` (None: the CPU count), `memory_mb` per program,
    `default_timeout_s`, `sandbox_options` (more run_programs arguments, e.g.
    {"site_packages": True} for numpy) and `chat`.

    A program passes only if its test runs to the end (the sandbox's token check), so printing
    "True", exiting early or killing the process cannot pass. An empty completion or code that
    does not compile scores 0 without running. Every program of the batch runs in one
    run_programs call (one per distinct timeout), identical (code, test) pairs once. A row
    where the sandbox itself failed (status ERROR, never the program's doing) gets None.
    """
    n = len(completions)
    if tests is None:
        raise ValueError("reward 'unit_tests' needs a 'tests' column (a list of asserts or a test block per row)")
    tests = _column("tests", tests, n)
    prefixes = _column("code_prefix", code_prefix, n, "")
    setups = _column("setup", setup, n, "")
    entry_points = _column("entry_point", entry_point, n, "")
    timeouts = _column("sandbox_timeout_s", sandbox_timeout_s, n, default_timeout_s)

    scores: list[float | None] = [None] * n
    jobs: dict[tuple[str, str, float], int] = {}  # (code, test, timeout) -> program index
    row_jobs: dict[int, list[int]] = {}
    for i, completion in enumerate(completions):
        if tests[i] is None:
            continue
        blocks = test_blocks(tests[i], entry_points[i], setups[i], f"row {i}")
        if not blocks:
            continue
        completion = _code(completion, chat)
        code = prefixes[i] + completion
        if setups[i]:  # the setup (imports, fixtures) runs in the program process too, as MBPP's does
            code = setups[i] + "\n" + code
        if not completion.strip() or not _compiles(code):
            scores[i] = 0.0
            continue
        timeout = float(timeouts[i])
        row_jobs[i] = [jobs.setdefault((code, test, timeout), len(jobs)) for test in blocks]

    results: list = [None] * len(jobs)
    by_timeout: dict[float, list[tuple[int, Program]]] = {}
    for (code, test, timeout), k in jobs.items():
        by_timeout.setdefault(timeout, []).append((k, Program(code=code, tests=test, name=f"program{k}")))
    for timeout, group in by_timeout.items():
        done = run_programs([p for _, p in group], Limits(timeout_s=timeout, memory_mb=memory_mb),
                            workers=workers or os.cpu_count() or 1, progress=False, **(sandbox_options or {}))
        for (k, _), res in zip(group, done):
            results[k] = res

    errors = 0
    for i, ks in row_jobs.items():
        statuses = [results[k].status for k in ks]
        if Status.ERROR in statuses:
            errors += 1
            continue
        scores[i] = sum(s is Status.PASSED for s in statuses) / len(statuses)
    if errors:
        first = next(results[k] for ks in row_jobs.values() for k in ks if results[k].status is Status.ERROR)
        log.warning("unit_tests: the sandbox failed on %d of %d completions (reward None), e.g. %s",
                    errors, n, first.reason)
    return scores


@register_reward("syntax_valid")
def syntax_valid(prompts, completions, *, code_prefix=None, chat: bool = False, **_):
    """1.0 if `code_prefix + completion` parses (ast.parse), else 0.0 (`chat`: see unit_tests)."""
    prefixes = _column("code_prefix", code_prefix, len(completions), "")
    return [1.0 if _parses(p + _code(c, chat)) else 0.0 for p, c in zip(prefixes, completions)]


_SEVERITIES = ("low", "medium", "high")


@register_reward("bandit_clean")
def bandit_clean(prompts, completions, *, code_prefix=None, min_severity: str = "medium",
                 workers: int | None = None, chat: bool = False, **_):
    """1.0 if bandit finds nothing of severity >= min_severity in the completion's lines, else 0.0.

    Bandit reads `code_prefix + completion` (it needs the whole module) but findings on the
    prefix's lines are not the model's and do not count (codejax.evaluation.quality's rules:
    --ignore-nosec, B101 skipped). None where the code does not parse. One bandit process per
    2,000 completions. `chat`: see unit_tests.
    """
    from codejax.evaluation import quality
    if min_severity.lower() not in _SEVERITIES:
        raise ValueError(f"min_severity={min_severity!r}; expected one of {_SEVERITIES}")
    quality.check_tools(security=True)
    prefixes = _column("code_prefix", code_prefix, len(completions), "")
    codes, first_lines = {}, {}
    for i, (prefix, completion) in enumerate(zip(prefixes, completions)):
        code = prefix + _code(completion, chat)
        if _parses(code):
            codes[i], first_lines[i] = code, quality._first_model_line(code, len(prefix))
    findings = quality._bandit(codes, first_lines, workers or os.cpu_count() or 1)
    level = _SEVERITIES.index(min_severity.lower())
    scores: list[float | None] = [None] * len(completions)
    for i, found in findings.items():
        bad = any(_SEVERITIES.index(f["issue_severity"].lower()) >= level for f in found)
        scores[i] = 0.0 if bad else 1.0
    return scores


_FENCE_LINE = re.compile(r"^[ \t]*```", re.M)
_PYTHON_BLOCK = re.compile(r"^[ \t]*```[ \t]*(?:python3?|py)[ \t]*\n(.*?)\n[ \t]*```[ \t]*$", re.M | re.S)


def single_python_block(text: str) -> bool:
    """Exactly one fenced block in `text`, tagged python (or py, python3), closed, not blank."""
    if len(_FENCE_LINE.findall(text)) != 2:
        return False
    m = _PYTHON_BLOCK.search(text)
    return bool(m and m.group(1).strip())


@register_reward("format")
def format_reward(prompts, completions, *, format_regex=None, **_):
    """1.0 if the completion has the expected format, else 0.0.

    Default (chat answers): exactly one fenced code block, opened by ```python (or ```py,
    ```python3) and closed by ```, each on a line of its own, with a non-blank body; prose
    before and after is allowed. With a `format_regex` column (or partial argument), the
    completion must fully match that row's regex instead (re.fullmatch with re.DOTALL).
    """
    patterns = _column("format_regex", format_regex, len(completions))
    scores = []
    for i, (pattern, completion) in enumerate(zip(patterns, completions)):
        text = _text(completion)
        if pattern is None:
            scores.append(1.0 if single_python_block(text) else 0.0)
            continue
        try:
            ok = re.fullmatch(pattern, text, re.DOTALL) is not None
        except re.error as e:
            raise ValueError(f"row {i}: format_regex {pattern!r} is not a valid regex: {e}") from None
        scores.append(1.0 if ok else 0.0)
    return scores


_INTEGER = re.compile(r"-?\d+")


@register_reward("exact_answer")
def exact_answer(prompts, completions, *, answer=None, **_):
    """1.0 if the completion gives the row's `answer`, else 0.0; None for rows without one. A numeric
    answer must be the completion's last integer ("The answer is 10063." counts); any other answer
    must equal the completion, stripped."""
    if answer is None:
        raise ValueError("reward 'exact_answer' needs an 'answer' column")
    out: list[float | None] = []
    for completion, want in zip(completions, _column("answer", answer, len(completions))):
        if want is None:
            out.append(None)
            continue
        text, want = _text(completion).strip(), str(want).strip()
        if _INTEGER.fullmatch(want):
            found = _INTEGER.findall(text)
            out.append(float(bool(found) and int(found[-1]) == int(want)))
        else:
            out.append(float(text == want))
    return out
