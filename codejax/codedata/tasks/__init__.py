"""Task builders: one cleaned source file in, instruction-tuning and preference rows out.

    rows, skipped = build_tasks(record, TASK_NAMES, random.Random(seed), TaskOptions())

``record`` is a cleaned file, ``{"content", "path", "repo", "license", "language", ...}``.
Up to ``max_functions_per_file`` of its functions and methods (drawn with ``rng`` and kept
in file order; see :mod:`~codejax.codedata.tasks.source` for which are found) each give at
most one row per task. Rows are Alpaca ``{instruction, input, output}`` or chat
``{messages: [system?, user, assistant]}`` (``TaskOptions.row_format``; the chat user turn
is the instruction, a blank line and the input), except ``preference`` rows, which are
always ``{prompt, chosen, rejected}`` strings with ``prompt + chosen`` the whole answer.
Every row also has ``task``, ``repo``, ``path``, ``license``, ``function`` (qualified
name), ``lineno`` and ``difficulty`` (a float in [0, 1] from the body's length and
cyclomatic complexity; formula in :mod:`~codejax.codedata.tasks.source`), plus per-task
fields named below. ``verified`` is True when the sandbox observed what the row claims,
None when it was not (or could not be) checked.

The tasks (:data:`TASK_NAMES`):

Generation
  ``function_impl``    docstring summary + signature -> body; exactly
                       :func:`codejax.codedata.functions.mine_source`'s row (documented functions).
  ``completion``       signature, docstring and the first k >= 1 body lines -> the remaining lines.
  ``fim``              with probability ``fim_rate``: a span of 1-5 body lines is cut out; input is
                       ``fim_format(prefix, "", suffix, mode)`` with the tokenizer's sentinels and
                       output the middle, so input + output is exactly
                       ``fim_format(prefix, middle, suffix, mode)``. ``fim_mode``: psm, spm or
                       both (drawn per row). Extra: ``fim_mode``.
  ``test_generation``  function -> ``def test_<name>():`` of asserts. Sources: the docstring's
                       doctest examples (expression -> ``assert expr == literal`` or
                       ``assert repr(expr) == '...'``, exceptions -> try/except, statements kept as
                       setup; examples with doctest directives or printed output are dropped);
                       and, with ``check_with_sandbox``, generated inputs
                       (:func:`~codejax.codedata.execution.generated_calls`) run on the original,
                       their literal results recorded as asserts. With ``check_with_sandbox`` every
                       assert is then executed against the original file and only passing ones
                       are kept; without it, only the doctest-derived asserts are used, unrun
                       (doctests are the authors' own claims). Extra: ``test_origin``.
Understanding
  ``docstring``        function without its docstring -> the docstring (code summarisation).
  ``bug_detection``    half the rows the bug-injected function (answer: the kind, the line, the
                       fix), half the original ("No bug found."). Extra: ``has_bug``, ``bug_kind``.
  ``variable_naming``  locals masked as ``var_0, var_1, ...`` -> ``var_k: name`` lines.
  ``type_inference``   function with its own annotations stripped -> the annotated signature.
  ``code_search``      one row per function, direction drawn 50/50: a docstring summary and up to
                       four functions of the same file (same-file functions are hard negatives)
                       -> the matching letter and name; or a function and up to four summaries
                       -> the matching letter and summary. Extra: ``direction``.
Transformation
  ``repair``           bug-injected function -> the original. Extra: ``bug_kind``.
  ``refactor``         function -> the first applicable transform of ``augmentations`` (drawn
                       order), with an instruction naming it. Behavioural transforms (loops, if
                       swaps, string formatting) are executed against the original when
                       ``check_with_sandbox`` is on and inputs exist, and rejected unless every
                       output matches; otherwise they rest on their own checks (parse,
                       structure, and per-transform proofs). Extra: ``transform``.
Preference
  ``preference``       prompt = function_impl's instruction + signature, chosen = the body,
                       rejected = the same body with one injected bug.

Agentic
  ``tool_repair``      a tool-use trajectory, always ``{messages, tools}`` (the python tool): the user
                       gives the buggy function and what a call should print; the assistant runs it,
                       reads the sandbox's real output or error line, runs the fixed function and
                       answers with it. Needs ``check_with_sandbox``, inputs and a function that runs
                       on its own (skips ``no_sandbox``, ``no_inputs``, ``not_standalone``). Extra: ``bug_kind``.

``bug_detection``, ``repair``, ``preference`` and ``tool_repair`` share one injected bug per function. With
``check_with_sandbox`` and inputs, a bug that changes no output is redrawn (up to 3 times;
then the skip is ``bug_not_observable``, and ``no_bug_site`` when no kind applies).

Sandbox inputs (for refactor and bug checks) exist only for module-level functions: calls
taken from their doctests and, with ``check_with_sandbox``, generated from annotations or
conventional parameter names (:mod:`~codejax.codedata.augment.execution`). The whole file is run
with ``__name__`` set so that a main block stays quiet, followed by the function's variant.

Skips are counted as ``"task:reason"`` (e.g. ``"docstring:no_docstring"``,
``"fim:not_sampled"``); file-level ones as ``"file:reason"`` (``not_python``,
``unparsable``, ``over_max_functions``, and the extractor's ``cut_failed``/``too_long``/...).
A builder that raises on some odd function is counted as ``"task:error_<ExceptionType>"``
rather than stopping a corpus run; none is expected (the stdlib sweep in the tests has none).

Determinism: the same record, names, options and rng state give the same rows. Each
function draws one seed from ``rng``; each (function, task) then has its own generator,
so a task's rows do not change when other tasks are added or removed. Everything is
module-level, so :func:`build_tasks` runs in multiprocessing workers.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import random
from collections.abc import Sequence

from codejax.codedata.augment import AUGMENTATIONS, BUGS
from codejax.codedata.settings import Settings
from codejax.codedata.tasks.builders import BUILDERS, Job
from codejax.codedata.tasks.source import extract_functions, module_names, module_program, normalise_newlines

TASK_NAMES: tuple[str, ...] = ("function_impl", "completion", "fim", "test_generation", "docstring",
                               "bug_detection", "variable_naming", "type_inference", "code_search", "repair",
                               "refactor", "preference", "tool_repair")
OUTPUT_FORMATS = ("alpaca", "chat")
FIM_MODES = ("psm", "spm", "both")
assert set(TASK_NAMES) == set(BUILDERS)


@dataclasses.dataclass
class TaskOptions:
    """How rows are built; see the module doc for what each task does with these. The defaults
    are the `data_pipeline` config section's (codejax.codedata.settings.Settings)."""

    row_format: str = Settings.row_format          # "alpaca" | "chat"
    fim_mode: str = Settings.fim_mode              # "psm" | "spm" | "both" (drawn per row)
    fim_rate: float = Settings.fim_rate            # share of functions that get a FIM row
    max_functions_per_file: int = Settings.max_functions_per_file
    check_with_sandbox: bool = Settings.check_with_sandbox  # execute checks and derived tests in codejax.sandbox
    sandbox_timeout_s: float = Settings.sandbox_timeout_s
    augmentations: tuple[str, ...] = AUGMENTATIONS   # transforms the refactor task may use
    bug_kinds: tuple[str, ...] = BUGS
    max_body_lines: int = Settings.max_body_lines
    system_prompt: str = Settings.system_prompt     # chat only: a system turn ('' = none)

    def __post_init__(self):
        if self.row_format not in OUTPUT_FORMATS:
            raise ValueError(f"row_format must be one of {OUTPUT_FORMATS}, got {self.row_format!r}")
        if self.fim_mode not in FIM_MODES:
            raise ValueError(f"fim_mode must be one of {FIM_MODES}, got {self.fim_mode!r}")
        if not 0.0 <= self.fim_rate <= 1.0:
            raise ValueError(f"fim_rate must be in [0, 1], got {self.fim_rate}")
        if self.max_functions_per_file < 1 or self.max_body_lines < 1 or self.sandbox_timeout_s <= 0:
            raise ValueError("max_functions_per_file, max_body_lines and sandbox_timeout_s must be positive")
        unknown = [a for a in self.augmentations if a not in AUGMENTATIONS] + [b for b in self.bug_kinds if b not in BUGS]
        if unknown:
            raise ValueError(f"unknown augmentations or bug kinds {unknown}; known: {AUGMENTATIONS + BUGS}")
        self.augmentations, self.bug_kinds = tuple(self.augmentations), tuple(self.bug_kinds)


def check_task_names(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in TASK_NAMES]
    if unknown:
        raise ValueError(f"unknown task names {unknown}; known tasks: {', '.join(TASK_NAMES)}")


def _layout(task: str, fields: dict, options: TaskOptions) -> dict:
    if task == "tool_repair":  # a trajectory is a chat with tools in either row format
        return fields
    if task == "preference" or options.row_format == "alpaca":
        return fields
    user = fields["instruction"] + ("\n\n" + fields["input"] if fields["input"] else "")
    messages = [{"role": "system", "content": options.system_prompt}] if options.system_prompt else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": fields["output"]}]
    return {"messages": messages}


def build_tasks(record: dict, names: Sequence[str], rng: random.Random,
                options: TaskOptions) -> tuple[list[dict], collections.Counter]:
    """Rows for tasks ``names`` from one file ``record``, and a Counter of skip reasons."""
    check_task_names(names)
    skipped: collections.Counter = collections.Counter()
    language = str(record.get("language") or "python").lower()
    if language != "python":
        skipped["file:not_python"] += 1
        return [], skipped
    content = normalise_newlines(record.get("content") or "")
    path = record.get("path", "")
    try:
        functions, dropped = extract_functions(content, path, options.max_body_lines)
        tree = ast.parse(content)
        program = module_program(content)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        skipped["file:unparsable"] += 1
        return [], skipped
    skipped.update({f"file:{reason}": n for reason, n in dropped.items()})
    if len(functions) > options.max_functions_per_file:
        skipped["file:over_max_functions"] += len(functions) - options.max_functions_per_file
        keep = sorted(rng.sample(range(len(functions)), options.max_functions_per_file))
        chosen = [functions[i] for i in keep]
    else:
        chosen = functions
    known = module_names(tree)
    base = {"repo": record.get("repo", ""), "path": path, "license": record.get("license", "")}
    rows = []
    for fn in chosen:
        job = Job(fn, program, known, options, rng.getrandbits(64), functions)
        for task in names:
            try:
                out = BUILDERS[task](job, job.rng(task))
            except Exception as e:  # noqa: BLE001 - one odd function must not stop a corpus run
                out = f"error_{type(e).__name__}"
            if isinstance(out, str):
                skipped[f"{task}:{out}"] += 1
                continue
            fields, extra = out
            rows.append({"task": task, **base, "function": fn.qualname, "lineno": fn.lineno,
                         "difficulty": fn.difficulty, **_layout(task, fields, options), **extra})
    return rows, skipped
