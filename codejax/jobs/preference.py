"""Jobs `reward` (a Bradley-Terry reward model) and `dpo` (the DPO family), on preference pairs.

    python -m codejax.main --config configs/reward.py:tiny --workdir /tmp/rm --config.data.train_paths=pairs.jsonl ...
    python -m codejax.main --config configs/dpo.py:tiny --workdir /tmp/dpo --config.data.train_paths=pairs.jsonl ...

Both are tokenizer -> model (full or PEFT, codejax.setup.build_trainable) -> pair data
(codejax.data.pairs) -> run_training, like SFT. Their extra metrics (accuracy,
implicit rewards and margins) are logged under train/ and eval/.
"""
from __future__ import annotations

import jax

from codejax.data.pairs import pair_datasets_from_config
from codejax.jobs import register
from codejax.models import flops_per_token
from codejax.objectives import dpo, reward
from codejax.objectives.variables import HEAD, reference_view
from codejax.parallel import parallel_from_config
from codejax.setup import TrainableModel, add_reference_copy, build_trainable, finish, load_tokenizer
from codejax.train.loop import TrainInputs, run_training


def _pair_flops(tm: TrainableModel, seq_len: int, forwards: float) -> float:
    """FLOPs per real token: `forwards` extra no-grad passes (the reference) cost 1/3 of a step each."""
    return flops_per_token(tm.model.cfg, seq_len, causal=True) * (1 + forwards / 3)


@register("reward")
def run_reward(config, workdir: str) -> dict:
    tokenizer = load_tokenizer(config)
    par = parallel_from_config(config.parallel)
    tm = build_trainable(config, tokenizer, par)
    with par.context():
        head = jax.jit(lambda: reward.init_score_head(tm.model.cfg.hidden_size, jax.random.PRNGKey(config.seed + 2)),
                       out_shardings=par.param_shardings(reward.score_head_axes()))()
    variables = tm.variables.with_trainable(HEAD, head, reward.score_head_axes())
    data = pair_datasets_from_config(config, tokenizer, shift=False)
    inputs = TrainInputs(
        loss_fn=reward.reward_loss_fn(tm.model, config.preference.center_coef), variables=variables,
        train_iter=iter(data.train), make_eval_iter=data.eval, data_stats=dict(data.stats),
        flops_per_token=_pair_flops(tm, config.data.seq_len, 0), parallel=par, weight_unit="pairs")
    summary, state = run_training(config, workdir, inputs)
    # PPO/GRPO load the reward model from this run's checkpoints (config.rl.reward_model); with
    # train.export_hf, WORKDIR/hf_model is also an HF <Family>ForSequenceClassification.
    return finish(config, tm, summary, state, workdir, tokenizer, head=HEAD)


@register("dpo")
def run_dpo(config, workdir: str) -> dict:
    pc, dc = config.preference, config.data
    dpo.check_preference_config(pc)
    tokenizer = load_tokenizer(config)
    par = parallel_from_config(config.parallel)
    tm = build_trainable(config, tokenizer, par)
    extra, ref_passes = None, 0
    if dpo.needs_reference(pc) and pc.precompute_ref:  # the initial weights' log-probs, once, into the rows
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        extra = dpo.reference_columns(tm.model, reference_view(tm.variables.all()), dc.seq_len,
                                      dc.eval_batch_size or dc.batch_size, pad_id)
    elif dpo.needs_reference(pc):
        ref_passes = 1
        tm = add_reference_copy(tm, par)
    data = pair_datasets_from_config(config, tokenizer, shift=True, extra=extra)
    inputs = TrainInputs(
        loss_fn=dpo.dpo_loss_fn(tm.model, pc), variables=tm.variables, train_iter=iter(data.train),
        make_eval_iter=data.eval, data_stats=dict(data.stats),
        flops_per_token=_pair_flops(tm, dc.seq_len, ref_passes), parallel=par, weight_unit="pairs")
    summary, state = run_training(config, workdir, inputs)
    return finish(config, tm, summary, state, workdir, tokenizer)
