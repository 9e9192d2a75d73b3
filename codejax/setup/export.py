"""The end of a training job: the model facts in the summary, and the exports.

    WORKDIR/adapter    the HF PEFT adapter (PEFT methods HF PEFT has a format for; peft.export_adapter)
    WORKDIR/hf_model   the HF model, merged for PEFT (train.export_hf)
"""
from __future__ import annotations

import logging
import os

import jax

from codejax.models import save_hf
from codejax.objectives.variables import policy_view
from codejax.peft.api import merge
from codejax.peft.hf_peft import save_hf_adapter
from codejax.peft.methods import PEFT_METHODS
from codejax.setup.model import TrainableModel
from codejax.train.run import SIGTERM

log = logging.getLogger(__name__)


def export_trained(config, tm: TrainableModel, trained: dict, workdir: str, tokenizer) -> dict[str, str]:
    """Write the exports of `trained` (the trainable collections) on process 0; returns their paths."""
    if jax.process_index() != 0:
        return {}
    out = {}
    if tm.is_peft:
        spec = tm.model.peft
        row = PEFT_METHODS[spec.method]
        if config.peft.export_adapter and row.hf_peft_type:
            out["adapter"] = os.path.join(workdir, "adapter")
            save_hf_adapter(out["adapter"], tm.model, trained, base_model_name_or_path=config.model.hf_path or None)
        elif config.peft.export_adapter:
            log.info("peft.method=%s has no HF PEFT format; the adapter stays in the Orbax checkpoints",
                     spec.method)
        if config.train.export_hf:
            out["hf_model"] = os.path.join(workdir, "hf_model")
            merged = merge(tm.model, {**tm.variables.frozen, **trained})
            # A QLoRA base was 4-bit: its merged weights are written at 16 bits, not the f32 master dtype.
            save_hf(out["hf_model"], tm.model.cfg, merged, dtype=row.export_dtype, tokenizer=tokenizer)
    elif config.train.export_hf:
        out["hf_model"] = os.path.join(workdir, "hf_model")
        save_hf(out["hf_model"], tm.model.cfg, trained["params"], tokenizer=tokenizer)
    return out


def finish(config, tm: TrainableModel, summary: dict, state: dict, workdir: str, tokenizer) -> dict:
    """Add the model facts to the summary and export the trained model (heads and value models
    left out), unless preempted: a preemption's grace period is never spent exporting."""
    summary.update(tm.facts())
    if summary["stop_reason"] != SIGTERM:
        summary.update(export_trained(config, tm, policy_view(state["params"]), workdir, tokenizer))
    return summary
