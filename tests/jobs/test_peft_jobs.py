"""PEFT through the real `sft` job: sharded over 8 devices, adapter-only checkpoints, exports, resume."""
import ast
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding

from codejax.config import load_config_file
from codejax.data import ALPACA_PROMPT
from codejax.jobs import get_job
from codejax.models import Transformer, init_params, load_hf, logical_axes, save_hf, tiny_config
from codejax.parallel import Parallel, make_mesh
from codejax.peft import PeftSpec, init_adapters, load_hf_adapter
from codejax.setup import prepare_peft
from codejax.tokenizer import train_code_tokenizer
from codejax.train.metrics import read_metrics

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "sft_peft.py")


@pytest.fixture(scope="module")
def sft_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("peft_sft")
    rows = [{"instruction": f"Write a function that adds {i % 11} and {i % 7}.", "input": f"def add_{i}():",
             "output": f"    return {i % 11} + {i % 7}\n"} for i in range(96)]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    texts = [ALPACA_PROMPT.format(**r) + r["output"] for r in rows]
    train_code_tokenizer(texts * 3, vocab_size=400).save_pretrained(root / "tokenizer")
    return {"data": str(root / "train.jsonl"), "tokenizer": str(root / "tokenizer")}


def _config(variant, sft_files, **overrides):
    config = load_config_file(f"{CONFIG}:{variant}")
    settings = {"data.train_paths": sft_files["data"], "tokenizer.path": sft_files["tokenizer"],
                "data.eval_fraction": 0.1, "train.progress_bar": False, "train.steps": 20,
                "train.log_every": 5, "train.eval_every": 0, "train.checkpoint_every": 10,
                "train.async_checkpoint": False, **overrides}
    for dotted, value in settings.items():
        section, field = dotted.split(".")
        setattr(getattr(config, section), field, value)
    return config


def _checkpointed_collections(workdir: Path, step: int) -> set[str]:
    """Top-level keys of the params saved in a checkpoint (read from Orbax's tree metadata)."""
    metadata = json.loads((workdir / "checkpoints" / str(step) / "state" / "_METADATA").read_text())
    keys = [ast.literal_eval(k) for k in metadata["tree_metadata"]]  # "('params', 'lora', ...)"
    return {k[1] for k in keys if k[0] == "params"}


@pytest.mark.slow
def test_lora_sft_learns_checkpoints_the_adapter_only_and_resumes(sft_files, tmp_path):
    summary = get_job("sft")(_config("tiny", sft_files), str(tmp_path))
    losses = {r["step"]: r["train/loss"] for r in read_metrics(tmp_path / "metrics.jsonl") if "train/loss" in r}
    assert losses[20] < losses[5] - 0.25, losses
    assert summary["peft"]["method"] == "lora" and 0 < summary["peft"]["trainable_percent"] < 25
    assert _checkpointed_collections(tmp_path, 20) == {"lora"}
    # The exported adapter is an HF PEFT directory whose weights are the trained ones.
    spec, adapters = load_hf_adapter(summary["adapter"], tiny_config("llama", vocab_size=400))
    assert spec.method == "lora" and spec.rank == 16
    assert summary["adapter"] == str(tmp_path / "adapter")
    assert float(np.abs(adapters["lora"]["layers"]["self_attn"]["q_proj"]["lora_b"]).max()) > 0
    # Asking for more steps resumes from the adapter checkpoint onto the rebuilt base.
    resumed = get_job("sft")(_config("tiny", sft_files, **{"train.steps": 25}), str(tmp_path))
    assert resumed["steps"] == 25 and resumed["tokens_seen_this_run"] < summary["tokens_seen_this_run"]


@pytest.mark.slow
def test_qlora_sft_exports_a_merged_16bit_model(sft_files, tmp_path):
    summary = get_job("sft")(_config("qlora_tiny", sft_files, **{"train.export_hf": True}), str(tmp_path))
    assert _checkpointed_collections(tmp_path, 20) == {"lora"}
    assert json.loads((Path(summary["hf_model"]) / "config.json").read_text())["torch_dtype"] == "bfloat16"
    _, merged = load_hf(summary["hf_model"])
    kernel = merged["layers"]["self_attn"]["q_proj"]["kernel"]
    assert kernel.dtype == jnp.float32 and kernel.ndim == 4  # dequantised, merged, dense (loaded as f32)
    # Starting a new run from the exported adapter: its first eval equals the trained model's.
    again = get_job("sft")(_config("qlora_tiny", sft_files, **{
        "peft.adapter_path": summary["adapter"], "train.steps": 1, "train.eval_at_start": True,
        "optim.lr": 0.0, "optim.warmup_steps": 0}), str(tmp_path / "again"))
    np.testing.assert_allclose(again["last_eval"]["eval/loss"], summary["last_eval"]["eval/loss"], rtol=1e-4)


@pytest.mark.slow
def test_prefix_tuning_cannot_export_a_merged_model(sft_files, tmp_path):
    with pytest.raises(ValueError, match="cannot be merged"):
        get_job("sft")(_config("prefix_tiny", sft_files, **{"train.export_hf": True}), str(tmp_path))


@pytest.mark.parametrize("method", ["lora", "qlora", "prefix"])
def test_adapters_follow_the_logical_rules_on_8_devices(method):
    cfg = tiny_config("llama")
    par = Parallel.create(make_mesh(1, 8, 1), "fsdp")
    base = init_params(cfg, jax.random.PRNGKey(0))

    class _Config:  # the fields prepare_peft reads
        seed = 0
    _, setup, _ = prepare_peft(_Config, PeftSpec(method), cfg, base, logical_axes(cfg), par)
    for leaf, spec in zip(jax.tree_util.tree_leaves(setup.trainable), jax.tree_util.tree_leaves(
            setup.trainable_axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))):
        expected = tuple("fsdp" if name == "embed" else None for name in spec)
        assert isinstance(leaf.sharding, NamedSharding)
        assert tuple(leaf.sharding.spec) + (None,) * (leaf.ndim - len(leaf.sharding.spec)) == expected
    if method == "lora":  # lora_a [layers, embed, rank]: the embed dim is split 8 ways
        a = setup.trainable["lora"]["layers"]["self_attn"]["q_proj"]["lora_a"]
        assert a.addressable_shards[0].data.shape == (cfg.num_layers, cfg.hidden_size // 8, 8)
