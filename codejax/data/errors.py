"""The one exception type for bad input rows, and the policy for skipping them.

Every bad row becomes a :class:`DataError` that says *where* (file and line, or file and
row), *which field*, and *what was wrong*. The pipeline then either raises it or, when the
config allows skipping, counts it under a short ``reason`` key, so a dataset that loses rows
always says how many and why (principle 8 of DESIGN.md: nothing is lost silently).
"""

from __future__ import annotations

import collections
import logging

logger = logging.getLogger(__name__)

# Reason keys, used as metric names (``rows_skipped/<reason>``): keep them short and stable.
INVALID_JSON = "invalid_json"
NOT_UTF8 = "not_utf8"
NOT_AN_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
EMPTY_FIELD = "empty_field"
BAD_ROLE = "bad_role"
NO_ASSISTANT_TURN = "no_assistant_turn"

# How many individual skipped rows to log before only the totals are reported.
MAX_LOGGED_SKIPS = 10


class DataError(ValueError):
    """A malformed input row: ``"<where>: field '<field>': <problem>"``.

    ``where`` is the row's provenance (``"/data/train.jsonl:3"``, ``"/data/x.parquet:row 5"``),
    ``field`` the offending field path (``"output"``, ``"messages[2].role"``) or ``None`` when
    the row as a whole is bad (invalid JSON), and ``reason`` one of the module's reason keys.
    Subclassing ValueError keeps ``except ValueError`` callers working.
    """

    def __init__(self, where: str, field: str | None, problem: str, reason: str):
        self.where = where
        self.field = field
        self.problem = problem
        self.reason = reason
        location = where if field is None else f"{where}: field '{field}'"
        super().__init__(f"{location}: {problem}")

    def __reduce__(self):
        # Exceptions pickle via their args; ours has a richer constructor (for worker processes).
        return DataError, (self.where, self.field, self.problem, self.reason)


def json_type_name(value: object) -> str:
    """The JSON-ish name of a value's type, for messages like ``"expected a string, got int"``."""
    if value is None:
        return "null"
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "bool"
    return {str: "string", int: "int", float: "float", list: "list", dict: "object",
            bytes: "bytes"}.get(type(value), type(value).__name__)


class SkipPolicy:
    """Raise every :class:`DataError`, or count (and log the first few of) them.

    ``counts`` maps ``"rows_skipped"`` and ``"rows_skipped/<reason>"`` to ints; it is merged
    into the pipeline's stats so the training loop can log skips as metrics.
    """

    def __init__(self, skip_bad_rows: bool):
        self.skip_bad_rows = skip_bad_rows
        self.counts: collections.Counter[str] = collections.Counter()

    def handle(self, error: DataError) -> None:
        """Raise ``error`` unless skipping is enabled, in which case count it."""
        if not self.skip_bad_rows:
            raise error
        self.counts["rows_skipped"] += 1
        self.counts[f"rows_skipped/{error.reason}"] += 1
        if self.counts["rows_skipped"] <= MAX_LOGGED_SKIPS:
            logger.warning("Skipping bad row: %s", error)
        elif self.counts["rows_skipped"] == MAX_LOGGED_SKIPS + 1:
            logger.warning("More bad rows are being skipped; see the rows_skipped/* stats.")
