"""Jobs `grpo` (GRPO or RLOO, config.rl.algorithm) and `ppo`: RL on prompts with execution rewards.

    python -m codejax.main --config configs/grpo_code.py --workdir /runs/grpo \
        --config.model.hf_path=/runs/sft/hf_model --config.rl.prompts_path=/data/mbpp_prompts.jsonl
    python -m codejax.main --config configs/ppo.py:tiny --workdir /tmp/ppo --config.tokenizer.path=TOKENIZER_DIR

Prompts: JSONL/parquet rows with a `prompt` string plus the columns the reward functions read
(`tests`: a list of asserts, `code_prefix`: code the completion continues, ...; see
codejax/rl/rewards.py), or the built-in arithmetic-function task (codejax/rl/tasks.py).
The policy is the model (full fine-tuning or PEFT, as in SFT); the reference for the KL term
is a frozen copy of the initial weights, or with PEFT the base with the adapters off.
`rl.reward_model` adds a trained reward model (a `reward` job's workdir) as reward "reward_model".
"""
from __future__ import annotations

import hashlib
import logging

import jax
import jax.numpy as jnp
import numpy as np

from codejax.data import sources
from codejax.data.errors import DataError
from codejax.data.formats import require_string
from codejax.jobs import register
from codejax.jobs.eval import encode_prompts, find_checkpoint, restore_trainable, with_run_config
from codejax.jobs.lm import TrainableModel, build_trainable, finish, load_tokenizer
from codejax.parallel import parallel_from_config
from codejax.rl import reward_model as rm
from codejax.rl import rewards as reward_fns
from codejax.rl.rollout import RewardSpec
from codejax.rl.tasks import BUILTIN_TASKS
from codejax.rl.trainer import RLTask, run_rl

log = logging.getLogger(__name__)

BUILTIN_TASK_SIZE = 2048  # prompts drawn for a built-in task (then split by rl.eval_fraction)


def _held_out(text: str, seed: int, fraction: float) -> bool:
    digest = hashlib.sha256(f"{seed}\0{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64 < fraction


def load_prompt_rows(config) -> tuple[list[dict], list[dict]]:
    """(train, eval) prompt rows; identical prompts always land on the same side."""
    rc = config.rl
    if rc.prompts_path:
        rows = []
        for where, row in sources.read_rows([p.strip() for p in rc.prompts_path.split(",") if p.strip()]):
            if isinstance(row, DataError):
                raise row
            require_string(row, "prompt", where)
            rows.append(row)
    elif rc.builtin_task in BUILTIN_TASKS:
        rows = BUILTIN_TASKS[rc.builtin_task](BUILTIN_TASK_SIZE, seed=config.seed)
    else:
        raise ValueError(f"rl.builtin_task={rc.builtin_task!r}; known: {sorted(BUILTIN_TASKS)} (or set rl.prompts_path)")
    train = [r for r in rows if not _held_out(r["prompt"], config.seed, rc.eval_fraction)]
    held = [r for r in rows if _held_out(r["prompt"], config.seed, rc.eval_fraction)]
    if not train:
        raise ValueError(f"no training prompts (of {len(rows)}) with rl.eval_fraction={rc.eval_fraction}")
    return train, held


def attach_prompt_ids(rows: list[dict], tokenizer, chat: bool) -> list[dict]:
    texts = [r["prompt"] for r in rows]
    if chat:
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True,
                                               tokenize=False) for t in texts]
    ids = encode_prompts(tokenizer, texts, "chat" if chat else "completion")
    return [{**r, "prompt_ids": i} for r, i in zip(rows, ids)]


def reward_model_fn(config, tokenizer, run_dir: str):
    """A reward function scoring prompt + completion + EOS with a `reward` job's latest checkpoint."""
    step_dir, step, run_dir = find_checkpoint(run_dir)
    rm_config = with_run_config(config, run_dir)
    par = parallel_from_config(rm_config.parallel)
    tm = build_trainable(rm_config, tokenizer, par)
    head = jax.device_put(rm.init_score_head(tm.model.cfg.hidden_size, jax.random.PRNGKey(0)),
                          par.param_shardings(rm.score_head_axes()))
    target = {**tm.trainable, rm.HEAD: head}
    trained = restore_trainable(step_dir, target)
    variables = {**(tm.frozen or {}), **trained}
    log.info("reward model: %s step %d", run_dir, step)
    model, eos = tm.model, tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    score = jax.jit(lambda v, t, p, s: rm.sequence_scores(model, v, t, p, s))

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


def _setup(config, algorithm: str) -> tuple[RLTask, TrainableModel]:
    rc = config.rl
    tokenizer = load_tokenizer(config)
    par = parallel_from_config(config.parallel)
    reward_fns.SANDBOX_WORKERS = rc.sandbox_workers or None
    reward_fns.SANDBOX_TIMEOUT_S = rc.sandbox_timeout_s
    extra = {"reward_model": reward_model_fn(config, tokenizer, rc.reward_model)} if rc.reward_model else None
    rewards = RewardSpec.from_config(rc, extra)
    tm = build_trainable(config, tokenizer, par)
    reference = None
    if tm.peft is not None:
        reference = lambda trainable, frozen: {"params": frozen["params"]}  # noqa: E731 - adapters off
    elif rc.kl_coef > 0:  # a frozen copy of the initial weights
        shardings = par.param_shardings(tm.trainable_axes["params"])
        with par.context():
            tm.frozen = {"ref": jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=shardings)(
                tm.trainable["params"])}
        tm.frozen_axes = {"ref": tm.trainable_axes["params"]}
        reference = lambda trainable, frozen: {"params": frozen["ref"]}  # noqa: E731
    params, axes = dict(tm.trainable), dict(tm.trainable_axes)
    if algorithm == "ppo":
        # A zero value head: values start at 0 and the value loss sends no gradient into the shared
        # trunk until the head has learnt something.
        params[rm.HEAD] = jax.device_put({"kernel": jnp.zeros((tm.model.cfg.hidden_size, 1), jnp.float32)},
                                         par.param_shardings(rm.score_head_axes()))
        axes[rm.HEAD] = rm.score_head_axes()
        if rc.value_head == "separate":
            if tm.peft is not None:
                raise ValueError("rl.value_head='separate' trains a full copy of the model as the value model; "
                                 "with PEFT use value_head='shared'")
            shardings = par.param_shardings(tm.trainable_axes["params"])
            with par.context():
                params["value_params"] = jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=shardings)(
                    tm.trainable["params"])
            axes["value_params"] = tm.trainable_axes["params"]
        elif rc.value_head != "shared":
            raise ValueError(f"rl.value_head={rc.value_head!r}; expected 'shared' or 'separate'")
    train, held = load_prompt_rows(config)
    task = RLTask(algorithm, tm.model, tokenizer, params, axes, tm.frozen, tm.frozen_axes, reference, rewards,
                  attach_prompt_ids(train, tokenizer, rc.chat), attach_prompt_ids(held, tokenizer, rc.chat), par)
    return task, tm


def _run(config, workdir: str, algorithm: str) -> dict:
    task, tm = _setup(config, algorithm)
    summary, state = run_rl(config, workdir, task)
    policy = {k: v for k, v in state["params"].items() if k not in (rm.HEAD, "value_params")}
    return finish(config, tm, summary, {"params": policy}, workdir, task.tokenizer)


@register("grpo")
def train_grpo(config, workdir: str) -> dict:
    if config.rl.algorithm not in ("grpo", "rloo"):
        raise ValueError(f"job 'grpo': rl.algorithm must be 'grpo' or 'rloo', got {config.rl.algorithm!r}")
    return _run(config, workdir, config.rl.algorithm)


@register("ppo")
def train_ppo(config, workdir: str) -> dict:
    return _run(config, workdir, "ppo")

