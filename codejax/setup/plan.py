"""The `--dry_run` plan: the resolved model and run figures, from abstract shapes only.

In setup (not train/console.py) because it builds the tokenizer and model config the way a job does.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import jax

from codejax.models import Transformer, abstract_params, param_counts
from codejax.parallel import parallel_from_config
from codejax.parallel.memory import estimate_memory
from codejax.peft import init_adapters
from codejax.setup.model import load_tokenizer, model_config
from codejax.setup.peft import resolve_spec
from codejax.train.console import bytes_text, mesh_text, say, tokens_per_step

log = logging.getLogger(__name__)


def plan(config) -> dict[str, Any]:
    """The resolved model and run figures, without loading weights or data: parameters, trainable
    parameters, tokens per step, steps and a per-device memory estimate."""
    out: dict[str, Any] = {"job": config.job, "steps": config.train.steps}
    what, count = tokens_per_step(config)
    out[f"{what}_per_step"] = count
    if config.job in ("data",):
        return out
    tokenizer = load_tokenizer(config)
    cfg = model_config(config, tokenizer)
    total = param_counts(cfg)["total"]
    out.update(model=f"{cfg.family if hasattr(cfg, 'family') else config.model.family}",
               parameters=total, vocab_size=cfg.vocab_size, layers=cfg.num_layers, hidden_size=cfg.hidden_size)
    par = parallel_from_config(config.parallel)
    out["devices"] = mesh_text(par)
    if config.peft.method != "none":
        out["trainable_parameters"] = _peft_trainable(config, cfg, tokenizer)
    else:
        out["trainable_parameters"] = total
    if config.job not in ("eval",):
        memory = estimate_memory(cfg, par, config.data.batch_size, config.data.seq_len,
                                 config.optim.grad_accum_steps)
        note = " (full fine-tuning figure; PEFT needs less for grads and optimizer)" \
            if config.peft.method != "none" else ""
        out["memory_per_device"] = {k: bytes_text(v) for k, v in memory.items()}
        out["memory_note"] = "estimate: state from the shardings, activations from a formula" + note
    return out


def _peft_trainable(config, cfg, tokenizer) -> int | str:
    """Trainable adapter parameters from abstract shapes (nothing is allocated)."""
    try:
        spec, _ = resolve_spec(config, cfg, tokenizer)
        shapes = jax.eval_shape(lambda p: init_adapters(Transformer(cfg, peft=spec), p, jax.random.PRNGKey(0)),
                                abstract_params(cfg))
        return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes)))
    except Exception as e:  # noqa: BLE001 - a plan figure, not a check
        log.debug("no abstract adapter count: %s", e)
        return "n/a"


def print_plan(config, workdir: str) -> dict[str, Any]:
    """The resolved config on stderr; the plan is returned (the CLI prints it as JSON on stdout)."""
    figures = plan(config)
    say(str(config))
    say(f"plan for --workdir {workdir} (nothing was loaded, trained or written):")
    return figures
