"""Jobs `grpo` (GRPO, RLOO or another registered algorithm: config.rl.algorithm) and `ppo`.

    python -m codejax.main --config configs/grpo_code.py --workdir /runs/grpo \
        --config.model.hf_path=/runs/sft/hf_model --config.rl.prompts_path=/data/mbpp_prompts.jsonl
    python -m codejax.main --config configs/ppo.py:tiny --workdir /tmp/ppo --config.tokenizer.path=TOKENIZER_DIR

Prompts: JSONL/parquet rows with a `prompt` string plus the columns the reward functions read
(`tests`: a list of asserts, `code_prefix`: code the completion continues, ...; see
codejax/rl/rewards.py), or a built-in environment (codejax/rl/environments.py).
The policy is the model (full fine-tuning or PEFT, as in SFT); the reference for the KL term
is a frozen copy of the initial weights, or with PEFT the base with the adapters off.
`rl.reward_model` adds a trained reward model (a `reward` job's workdir) as reward "reward_model".
"""
from __future__ import annotations

from codejax.jobs import register
from codejax.parallel import parallel_from_config
from codejax.rl.algorithms import get_algorithm
from codejax.rl.loop import RLInputs, run_rl
from codejax.rl.prompts import attach_prompt_ids, load_prompt_rows
from codejax.rl.reward_model import reward_model_fn
from codejax.rl.rollout import RewardSpec
from codejax.setup import add_reference_copy, build_trainable, finish, load_tokenizer


def run_policy_optimization(config, workdir: str, algorithm_name: str) -> dict:
    rc = config.rl
    algorithm = get_algorithm(algorithm_name)
    tokenizer = load_tokenizer(config)
    par = parallel_from_config(config.parallel)
    extra = {"reward_model": reward_model_fn(config, tokenizer, rc.reward_model)} if rc.reward_model else None
    rewards = RewardSpec.from_config(rc, extra)
    tm = build_trainable(config, tokenizer, par)
    if rc.kl_coef > 0:
        tm = add_reference_copy(tm, par)
    variables = tm.variables
    if algorithm.add_variables is not None:
        variables = algorithm.add_variables(variables, tm.model, rc, par)
    train, held = load_prompt_rows(config)
    inputs = RLInputs(algorithm.name, tm.model, tokenizer, variables, rewards,
                      attach_prompt_ids(train, tokenizer, rc.chat, rc.env),
                      attach_prompt_ids(held, tokenizer, rc.chat, rc.env), par)
    summary, state = run_rl(config, workdir, inputs)
    return finish(config, tm, summary, state, workdir, tokenizer)


@register("grpo")
def run_grpo(config, workdir: str) -> dict:
    if get_algorithm(config.rl.algorithm).job != "grpo":
        raise ValueError(f"job 'grpo': rl.algorithm={config.rl.algorithm!r} is run by job "
                         f"{get_algorithm(config.rl.algorithm).job!r}")
    return run_policy_optimization(config, workdir, config.rl.algorithm)


@register("ppo")
def run_ppo(config, workdir: str) -> dict:
    return run_policy_optimization(config, workdir, "ppo")
