"""RL over multi-turn episodes: tool replies are in the rows but out of the loss, the trainer's log-probs of the
policy's tokens agree with the sampler's across turns, and the episode metrics are logged."""
import json

import numpy as np
import pytest

from codejax.config import load_config_file
from codejax.jobs import get_job
from codejax.rl import loop
from codejax.rl.rollout import rollout_batch
from codejax.rl.tool_envs import ENVS, register_env
from codejax.train.metrics import read_metrics


def test_rollout_batch_masks_the_replies_and_keeps_them_in_the_rows():
    batch = rollout_batch([[5, 6]], [[7, 8, 9, 10, 11]], 3, 6, 0, sampled_mask=[[1, 0, 0, 1, 1]])
    assert batch["inputs"][0].tolist() == [0, 5, 6, 7, 8, 9, 10, 11]
    assert batch["mask"][0].tolist() == [1, 0, 0, 1, 1, 0]
    assert batch["valid"][0].tolist() == [1, 1, 1, 1, 1, 0]
    assert "valid" not in rollout_batch([[5, 6]], [[7]], 3, 6, 0)


@pytest.fixture()
def replying_env():
    """An environment that answers every turn for two turns, then ends the episode with reward 1."""
    @register_env("test_reply")
    class Reply:
        tools = []

        def __init__(self, row, **_):
            self.turns = self.tool_calls = self.tool_errors = 0

        def reset(self, row):
            return row["prompt"]

        def step(self, action):
            self.turns += 1
            self.tool_calls += 1
            return ("ok " * self.turns, 0.0, False) if self.turns < 2 else (None, 1.0, True)
    yield "test_reply"
    del ENVS["test_reply"]


@pytest.mark.slow
def test_episodes_train_with_replies_masked_and_logprobs_consistent(arith_dir, tmp_path, monkeypatch, replying_env):
    """PPO, whose GAE runs through the replies ("valid") while the loss skips them; GRPO's episodes run in
    the grpo_tools:tiny test and the notebook."""
    algorithm = "ppo"
    # A random policy almost never writes its end-of-turn token; with a third of the vocabulary ending a
    # turn, its turns are short and the environment is asked, so episodes have several turns and replies.
    monkeypatch.setattr(loop, "eos_ids", lambda tok, *a: tuple(range(3, len(tok), 3)))
    config = load_config_file("configs/ppo.py:tiny")
    config.tokenizer.path = str(arith_dir / "tokenizer")
    config.rl.builtin_task, config.rl.rewards, config.rl.env = "arith_functions", "", replying_env
    config.rl.max_turns, config.rl.max_new_tokens, config.rl.stop = 3, 48, ""
    config.train.steps, config.train.eval_every, config.train.log_every, config.train.progress_bar = 2, 2, 1, False
    summary = get_job(algorithm)(config, str(tmp_path))
    assert summary["stop_reason"] == "completed"
    rows = [r for r in read_metrics(str(tmp_path / "metrics.jsonl")) if "train/turns" in r]
    assert len(rows) == 2
    for r in rows:
        assert 1 < r["train/turns"] <= 2 and r["train/tool_calls"] == r["train/turns"]
        # the policy's tokens score the same in the trainer as in the sampler, replies and all
        assert r["train/logprob_diff/max"] < 1e-4 and np.isfinite(r["train/loss"])
        assert r["train/time/tool_s"] >= 0 and "train/time/generation_s" in r
    evals = [r for r in read_metrics(str(tmp_path / "metrics.jsonl")) if "eval/turns" in r]
    assert evals and "eval/tool_calls" in evals[0]
    logged = [json.loads(line) for line in (tmp_path / "completions.jsonl").read_text().splitlines()]
    assert any("<|im_start|>tool\nok" in r["completion"] for r in logged)  # whole transcripts


@pytest.mark.parametrize("field,value,match", [("env", "nope", "rl.env='nope'"), ("max_turns", 0, "rl.max_turns"),
                                               ("stop", "\\n", "rl.stop")])
def test_episode_settings_are_checked(field, value, match):
    config = load_config_file("configs/grpo_tools.py:tiny")
    setattr(config.rl, field, value)
    with pytest.raises(ValueError, match=match):
        loop.check_rl_config(config, loop.get_algorithm("grpo"), None)
