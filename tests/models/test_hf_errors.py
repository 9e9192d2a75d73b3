"""load_hf on bad directories names what is wrong; config.json conversion round-trips."""
import json

import jax
import numpy as np
import pytest
import transformers

from codejax.models import config_from_hf, config_to_hf, init_params, load_hf, save_hf, tiny_config
from codejax.models.safetensors_io import CheckpointReader, save_file


@pytest.fixture()
def saved(tmp_path):
    cfg = tiny_config("llama", num_layers=2)
    save_hf(tmp_path, cfg, init_params(cfg, jax.random.PRNGKey(0)))
    return tmp_path


def _rewrite_tensors(path, edit):
    with CheckpointReader(path) as reader:
        tensors = {k: reader.get(k) for k in reader.keys()}
    edit(tensors)
    save_file(path / "model.safetensors", tensors, metadata={"format": "pt"})


def test_unknown_architecture_is_named(saved):
    hf = json.loads((saved / "config.json").read_text())
    hf["architectures"] = ["GPT2LMHeadModel"]
    (saved / "config.json").write_text(json.dumps(hf))
    with pytest.raises(ValueError, match="GPT2LMHeadModel"):
        load_hf(saved)


def test_missing_tensor_is_named(saved):
    _rewrite_tensors(saved, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(KeyError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        load_hf(saved)


def test_misshaped_tensor_is_named(saved):
    def edit(t):
        t["model.layers.0.self_attn.k_proj.weight"] = np.zeros((8, 64), np.float32)
    _rewrite_tensors(saved, edit)
    with pytest.raises(ValueError, match=r"k_proj\.weight.*\(8, 64\)"):
        load_hf(saved, scan_layers=False)


def test_broken_config_json_names_file_and_line(saved):
    (saved / "config.json").write_text('{\n  "vocab_size": 512,\n  oops\n}')
    with pytest.raises(ValueError, match=r"config\.json: line 3"):
        load_hf(saved)


def test_missing_directory_contents(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf(tmp_path)


def test_unused_tensors_are_reported(saved, caplog):
    def edit(t):
        t["model.layers.0.self_attn.extra.weight"] = np.zeros((2,), np.float32)
    _rewrite_tensors(saved, edit)
    with caplog.at_level("WARNING"):
        load_hf(saved)
    assert "extra.weight" in caplog.text


@pytest.mark.parametrize("cfg", [
    tiny_config("llama", rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                           high_freq_factor=4.0, original_max_position_embeddings=64)),
    tiny_config("qwen2", tie_embeddings=True, sliding_window=16,
                sliding_window_layers=(False, True)),
    tiny_config("qwen3", rope_theta=1e6),
    tiny_config("starcoder2", sliding_window=32),
    tiny_config("mistral", sliding_window=32, eos_token_id=(2, 3)),
], ids=lambda c: c.family)
def test_config_round_trips_through_transformers(cfg, tmp_path):
    hf = config_to_hf(cfg)
    assert config_from_hf(hf) == cfg
    # transformers reads what we write, and its own re-serialisation maps back to the same config.
    (tmp_path / "config.json").write_text(json.dumps(hf))
    loaded = transformers.AutoConfig.from_pretrained(tmp_path)
    assert config_from_hf(loaded.to_dict()) == cfg
