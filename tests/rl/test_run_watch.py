"""What the RL loop tells the user about a run: sample completions in completions.jsonl (no
duplicates after a resume) and a warning when the policy stops learning."""
import json
import logging

import numpy as np
import pytest

from codejax.rl import loop
from codejax.rl.loop import STALL_STEPS, CompletionLog, StallWatch, completion_rows


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == loop.log.name]


def test_stall_warning_once_per_streak_naming_the_metric(caplog):
    watch = StallWatch()
    flat = {"train/zero_spread_fraction": 1.0, "train/grad_norm": 0.3}
    with caplog.at_level(logging.WARNING, logger=loop.log.name):
        warned = [watch.update(step, flat) for step in range(1, STALL_STEPS + 4)]
        assert warned[STALL_STEPS - 1] == ["train/zero_spread_fraction"]
        assert sum(map(len, warned)) == 1  # not again while the streak lasts
        messages = _warnings(caplog)
        assert len(messages) == 1 and "train/zero_spread_fraction has been 1" in messages[0]
        assert "rl.group_size" in messages[0] and f"steps 1-{STALL_STEPS}" in messages[0]
        # One step with signal ends the streak; a new streak warns again, after STALL_STEPS more.
        step = STALL_STEPS + 4
        assert watch.update(step, {"train/zero_spread_fraction": 0.5, "train/grad_norm": 0.3}) == []
        again = [watch.update(step + i, flat) for i in range(1, STALL_STEPS + 1)]
        assert again[-1] == ["train/zero_spread_fraction"] and sum(map(len, again)) == 1


def test_stall_warning_for_a_zero_gradient_without_group_metrics(caplog):
    watch = StallWatch()  # PPO logs no zero_spread_fraction
    with caplog.at_level(logging.WARNING, logger=loop.log.name):
        for step in range(1, STALL_STEPS):
            assert watch.update(step, {"train/grad_norm": 0.0}) == []
        assert watch.update(STALL_STEPS, {"train/grad_norm": 0.0}) == ["train/grad_norm"]
    assert "train/grad_norm has been 0" in _warnings(caplog)[0]


def test_completion_rows_spread_over_prompts_with_every_reward():
    n, group = 8, 4  # two prompts x four completions
    prompts = [f"p{i // group}" for i in range(n)]
    total = np.array([1.0, 0, 0, 0, np.nan, 0, 0, 0])
    parts = {"unit_tests": total.copy(), "format": np.ones(n)}
    rows = completion_rows(3, prompts, [f"c{i}" for i in range(n)], total, parts, 2)
    assert [(r["prompt"], r["completion"]) for r in rows] == [("p0", "c0"), ("p1", "c4")]
    assert rows[0] == {"step": 3, "prompt": "p0", "completion": "c0", "reward": 1.0,
                       "rewards": {"unit_tests": 1.0, "format": 1.0}}
    assert rows[1]["reward"] is None and rows[1]["rewards"]["unit_tests"] is None  # NaN -> valid JSON null
    json.loads(json.dumps(rows[1], allow_nan=False))
    assert len(completion_rows(3, prompts, prompts, total, parts, 100)) == n
    assert completion_rows(3, prompts, prompts, total, parts, 0) == []


def test_completion_log_drops_rows_after_the_resumed_step(tmp_path):
    path = tmp_path / "completions.jsonl"
    rows = [{"step": s, "prompt": "p", "completion": "c", "reward": 0.0, "rewards": {}} for s in (1, 2, 3, 4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 5, "prompt": "p", "compl')  # torn
    log = CompletionLog(str(tmp_path), start_step=2)  # resumed from the step-2 checkpoint
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
    log.write(completion_rows(3, ["p"], ["again"], np.zeros(1), {}, 4))
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]
    CompletionLog(str(tmp_path), start_step=0)  # a fresh run in the workdir starts a fresh file
    assert path.read_text() == ""



def test_rl_stop_reads_shell_escapes_and_refuses_unknown_ones():
    from codejax.rl.loop import parse_stop
    assert parse_stop(r"\n\n|\ndef ") == ("\n\n", "\ndef ")
    assert parse_stop("\n") == ("\n",)  # a real newline from a config file stays one
    assert parse_stop(r"a\|b|c\\|") == ("a|b", "c\\")
    assert parse_stop("") == ()
    with pytest.raises(ValueError, match=r"rl\.stop=.*unknown escape '\\p'"):
        parse_stop(r"C:\path")
