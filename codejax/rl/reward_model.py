"""A trained reward model (a `reward` job's checkpoint) as an RL reward function (rl.reward_model)."""
from __future__ import annotations

import logging

import jax
import numpy as np

from codejax.objectives.reward import init_score_head, score_head_axes, sequence_scores
from codejax.objectives.variables import HEAD
from codejax.parallel import parallel_from_config
from codejax.setup import build_trainable, with_run_config
from codejax.train.checkpoint import find_checkpoint, restore_params

log = logging.getLogger(__name__)


def reward_model_fn(config, tokenizer, run_dir: str):
    """A reward function scoring prompt + completion + EOS with a `reward` job's latest checkpoint."""
    step_dir, step, run_dir = find_checkpoint(run_dir, "rl.reward_model")
    rm_config = with_run_config(config, run_dir)
    par = parallel_from_config(rm_config.parallel)
    tm = build_trainable(rm_config, tokenizer, par)
    head = jax.device_put(init_score_head(tm.model.cfg.hidden_size, jax.random.PRNGKey(0)),
                          par.param_shardings(score_head_axes()))
    trained = restore_params(step_dir, {**tm.variables.trainable, HEAD: head})
    variables = {**tm.variables.frozen, **trained}
    log.info("reward model: %s step %d", run_dir, step)
    model, eos = tm.model, tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    score = jax.jit(lambda v, t, p, s: sequence_scores(model, v, t, p, s))

    def reward_model(prompts, completions, **_):
        seqs = [list(tokenizer(p + c, add_special_tokens=False)["input_ids"]) + [eos]
                for p, c in zip(prompts, completions)]
        width = -(-max(map(len, seqs)) // 32) * 32  # few shapes, few compiles
        tokens = np.full((len(seqs), width), pad_id, np.int32)
        segments = np.zeros_like(tokens)
        for i, s in enumerate(seqs):
            tokens[i, :len(s)], segments[i, :len(s)] = s, 1
        positions = np.maximum(np.cumsum(segments, 1) - 1, 0).astype(np.int32)
        return np.asarray(score(variables, tokens, positions, segments)).tolist()

    return reward_model
