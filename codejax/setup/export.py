"""The end of a training job: the model facts in the summary, and the exports.

    WORKDIR/adapter    the HF PEFT adapter (PEFT methods HF PEFT has a format for; peft.export_adapter)
    WORKDIR/hf_model   the HF model, merged for PEFT (train.export_hf); a reward model's is
                       transformers' <Family>ForSequenceClassification with one label (see
                       `reward_head_export`)
"""
from __future__ import annotations

import logging
import os

import jax
import numpy as np

from codejax.models import config_to_hf, save_hf
from codejax.objectives.variables import policy_view
from codejax.peft.api import merge
from codejax.peft.hf_peft import save_hf_adapter
from codejax.peft.methods import PEFT_METHODS
from codejax.setup.model import TrainableModel
from codejax.train.run import SIGTERM

log = logging.getLogger(__name__)


def reward_head_export(cfg, kernel, tokenizer) -> dict:
    """save_hf arguments that write a reward model as `<Family>ForSequenceClassification` (num_labels=1).

    The score head is HF's `score` layout (a [1, hidden] weight, no bias). Pooling: HF scores the
    rightmost token whose id is not config.pad_token_id; codejax scores the last real token of the
    sequence, its EOS included. They agree exactly when pad and EOS differ. When they share an id
    (codejax's built-in tokenizer, many code models) HF would score the token before the EOS, so
    pad_token_id is written as null: HF then scores the last token, as codejax does, and takes
    one unpadded sequence (prompt + completion + EOS) per call."""
    arch = config_to_hf(cfg)["architectures"][0].replace("ForCausalLM", "ForSequenceClassification")
    pad = tokenizer.pad_token_id
    return {"extra_tensors": {"score.weight": np.asarray(jax.device_get(kernel), np.float32).T},
            "hf_config": {"architectures": [arch], "id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0},
                          "pad_token_id": None if pad is None or pad == tokenizer.eos_token_id else pad}}


def export_trained(config, tm: TrainableModel, trained: dict, workdir: str, tokenizer,
                   head: dict | None = None) -> dict[str, str]:
    """Write the exports of `trained` (the trainable collections) on process 0; returns their paths.
    `head`: a reward model's score head ({"kernel": [hidden, 1]}), written into hf_model."""
    if jax.process_index() != 0:
        return {}
    as_hf = reward_head_export(tm.model.cfg, head["kernel"], tokenizer) if head is not None else {}
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
            save_hf(out["hf_model"], tm.model.cfg, merged, dtype=row.export_dtype, tokenizer=tokenizer, **as_hf)
    elif config.train.export_hf:
        out["hf_model"] = os.path.join(workdir, "hf_model")
        save_hf(out["hf_model"], tm.model.cfg, trained["params"], tokenizer=tokenizer, **as_hf)
    return out


def finish(config, tm: TrainableModel, summary: dict, state: dict, workdir: str, tokenizer,
           head: str | None = None) -> dict:
    """Add the model facts to the summary and export the trained model (value models left out;
    the collection `head` names is written as a reward model's score head), unless preempted: a
    preemption's grace period is never spent exporting."""
    summary.update(tm.facts())
    if summary["stop_reason"] != SIGTERM:
        summary.update(export_trained(config, tm, policy_view(state["params"]), workdir, tokenizer,
                                      head=state["params"][head] if head else None))
    return summary
