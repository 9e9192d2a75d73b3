"""Jobs `pretrain` (causal LM on raw code) and `sft` (supervised fine-tuning).

Both are the same composition: tokenizer -> model -> data -> run_training -> export.
They differ only in the data format they accept: pretraining reads raw text;
SFT reads alpaca, prompt/completion or chat rows and trains on completions only.
"""
from __future__ import annotations

from codejax.data.pipeline import datasets_from_config
from codejax.evaluation.sampling import pass_at_k_hook
from codejax.jobs import register
from codejax.models import flops_per_token
from codejax.objectives.lm import lm_loss_fn
from codejax.parallel import parallel_from_config
from codejax.setup import build_trainable, finish, load_tokenizer
from codejax.train.loop import TrainInputs, run_training

def run_lm(config, workdir: str) -> dict:
    tokenizer = load_tokenizer(config)
    par = parallel_from_config(config.parallel)
    tm = build_trainable(config, tokenizer, par)
    data = datasets_from_config(config, tokenizer)
    inputs = TrainInputs(
        loss_fn=lm_loss_fn(tm.model), variables=tm.variables, train_iter=iter(data.train),
        make_eval_iter=data.eval, data_stats=dict(data.stats),
        flops_per_token=flops_per_token(tm.model.cfg, config.data.seq_len, causal=True), parallel=par,
        extra_eval=pass_at_k_hook(config, tm.model, tokenizer) if config.eval.during_training else None)
    summary, state = run_training(config, workdir, inputs)
    return finish(config, tm, summary, state, workdir, tokenizer)


@register("pretrain")
def run_pretrain(config, workdir: str) -> dict:
    if config.data.format != "text":
        raise ValueError(f"job 'pretrain' trains on raw text: data.format must be 'text', got {config.data.format!r}")
    return run_lm(config, workdir)


@register("sft")
def run_sft(config, workdir: str) -> dict:
    if config.data.format == "text":
        raise ValueError("job 'sft' needs prompt/response data (alpaca, prompt_completion or chat); "
                         "use job 'pretrain' for data.format='text'")
    return run_lm(config, workdir)
