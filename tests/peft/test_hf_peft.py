"""HF PEFT interop: codejax adapters load in PEFT and PEFT adapters load in codejax, same logits.

Each case saves a random tiny codejax base with save_hf, loads it in
transformers, and compares float32 logits of the adapted models both ways.
Adapters are perturbed away from their identity init (LoRA B = 0, (IA)3 = 1)
so a wrong mapping shows up as a logit difference.
"""
import json

import jax
import numpy as np
import peft
import pytest
import torch
import transformers

from codejax.models import Transformer, init_params, save_hf, tiny_config, unstack_layers
from codejax.models.safetensors_io import SafetensorsFile, save_file
from codejax.peft import PeftSpec, init_adapters, load_hf_adapter, save_hf_adapter

ATOL = 1e-4
VOCAB = 96
TOKENS = np.random.default_rng(0).integers(0, VOCAB, size=(2, 9))


def _noisy(tree, seed, scale):
    """tree + scale * N(0, 1), as numpy (so adapters and params are away from their init)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_unflatten(
        treedef, [np.asarray(x) + scale * rng.standard_normal(x.shape).astype(np.float32) for x in leaves])


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """family -> (scanned cfg, scanned params, HF directory, base logits), built once per family."""
    cache = {}

    def get(family):
        if family not in cache:
            cfg = tiny_config(family, vocab_size=VOCAB)
            # Noise on every leaf gives O(1) logits and non-trivial norms and biases.
            params = _noisy(jax.jit(init_params, static_argnums=0)(cfg, jax.random.PRNGKey(0)), 1, 0.1)
            path = tmp_path_factory.mktemp(f"base_{family}")
            save_hf(path, cfg, params)
            cache[family] = cfg, params, path, _jax_logits(cfg, None, params)
        return cache[family]
    return get


def _torch_model(path):
    return transformers.AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="eager").eval()


def _torch_logits(model, num_virtual_tokens=0):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(TOKENS)).logits.float().numpy()
    # PEFT prompt tuning returns logits for the virtual tokens too; codejax only for the real ones.
    return logits[:, num_virtual_tokens:]


# Jitted: one whole-model compile is several times faster than running the model op by op.
def _adapters(cfg, spec, params, seed, noise):
    model = Transformer(cfg, peft=spec)
    return _noisy(jax.jit(lambda p: init_adapters(model, p, jax.random.PRNGKey(seed)))(params), seed, noise)


def _jax_logits(cfg, spec, params, adapters=None):
    return np.asarray(jax.jit(Transformer(cfg, peft=spec).apply)({"params": params, **(adapters or {})}, TOKENS))


def _layout(cfg, params, scan):
    return (cfg, params) if scan else (cfg.replace(scan_layers=False), unstack_layers(params))


def _check(got, want, base):
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    assert np.abs(want - base).max() > 1e-2, "the adapter does not change the logits: the test is vacuous"


# ----------------------------------------------------------------------------- codejax -> PEFT

TO_PEFT = {
    "lora": ("llama", True, PeftSpec("lora", rank=4, alpha=8.0, target_modules=("q_proj", "v_proj")), 0.1),
    "lora_rslora_unscanned": ("llama", False, PeftSpec(
        "lora", rank=4, alpha=4.0, rslora=True, target_modules=("down_proj", "lm_head", "o_proj")), 0.1),
    "dora_bias": ("starcoder2", True, PeftSpec(
        "dora", rank=4, alpha=8.0, target_modules=("c_fc", "c_proj", "o_proj", "q_proj")), 0.1),
    "ia3": ("llama", True, PeftSpec("ia3", ia3_target_modules=("down_proj", "o_proj", "q_proj", "v_proj"),
                                    ia3_feedforward_modules=("down_proj", "o_proj")), 0.3),
    "ia3_bias": ("starcoder2", True, PeftSpec("ia3"), 0.3),  # k, v (biased outputs) and c_proj (input)
    "prompt": ("llama", True, PeftSpec("prompt", num_virtual_tokens=3), 1.0),
}


@pytest.mark.parametrize("case", sorted(TO_PEFT))
def test_codejax_adapter_loads_in_peft(case, bases, tmp_path):
    family, scan, spec, noise = TO_PEFT[case]
    cfg, params, base_dir, base_logits = bases(family)
    cfg, params = _layout(cfg, params, scan)
    adapters = _adapters(cfg, spec, params, 1, noise)
    save_hf_adapter(tmp_path, Transformer(cfg, peft=spec), adapters, base_model_name_or_path=str(base_dir))

    peft_model = peft.PeftModel.from_pretrained(_torch_model(base_dir), tmp_path).eval()
    want = _torch_logits(peft_model, spec.num_virtual_tokens if spec.method == "prompt" else 0)
    _check(_jax_logits(cfg, spec, params, adapters), want, base_logits)


# ----------------------------------------------------------------------------- PEFT -> codejax

FROM_PEFT = {
    "lora": ("llama", True, lambda: peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"]), 0.1),
    "lora_unscanned": ("llama", False, lambda: peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"]), 0.1),
    "lora_all_linear_rslora": ("starcoder2", True, lambda: peft.LoraConfig(
        r=2, lora_alpha=4, use_rslora=True, target_modules="all-linear"), 0.1),
    "dora_bias": ("starcoder2", True, lambda: peft.LoraConfig(
        r=4, lora_alpha=8, use_dora=True, target_modules=["q_proj", "k_proj", "o_proj", "c_fc"]), 0.1),
    "dora_unscanned": ("llama", False, lambda: peft.LoraConfig(
        r=4, lora_alpha=8, use_dora=True, target_modules=["q_proj", "up_proj", "down_proj"]), 0.1),
    "ia3": ("llama", True, lambda: peft.IA3Config(
        target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"]), 0.3),
    "ia3_bias_unscanned": ("starcoder2", False, lambda: peft.IA3Config(
        target_modules=["k_proj", "o_proj", "c_proj"], feedforward_modules=["c_proj"]), 0.3),
    "prompt": ("llama", True, lambda: peft.PromptTuningConfig(num_virtual_tokens=4), 1.0),
}


@pytest.mark.parametrize("case", sorted(FROM_PEFT))
def test_peft_adapter_loads_in_codejax(case, bases, tmp_path):
    family, scan, make_config, noise = FROM_PEFT[case]
    cfg, params, base_dir, base_logits = bases(family)
    cfg, params = _layout(cfg, params, scan)
    config = make_config()
    config.task_type = "CAUSAL_LM"
    peft_model = peft.get_peft_model(_torch_model(base_dir), config)
    torch.manual_seed(0)
    with torch.no_grad():  # every trainable tensor away from its (identity) init
        for p in peft_model.parameters():
            if p.requires_grad:
                p.add_(noise * torch.randn_like(p))
    peft_model.eval()
    want = _torch_logits(peft_model, getattr(config, "num_virtual_tokens", None) or 0)
    peft_model.save_pretrained(tmp_path)

    spec, adapters = load_hf_adapter(tmp_path, cfg)
    _check(_jax_logits(cfg, spec, params, adapters), want, base_logits)


def test_peft_config_becomes_spec(bases, tmp_path):
    cfg, _, base_dir, _ = bases("llama")
    config = peft.LoraConfig(r=4, lora_alpha=32, lora_dropout=0.05, use_rslora=True, use_dora=True,
                             task_type="CAUSAL_LM", target_modules=["v_proj", "self_attn.q_proj"])
    peft.get_peft_model(_torch_model(base_dir), config).save_pretrained(tmp_path)
    spec, adapters = load_hf_adapter(tmp_path, cfg)
    assert spec == PeftSpec("dora", rank=4, alpha=32.0, rslora=True, dropout=0.05,
                            target_modules=("q_proj", "v_proj"))
    assert adapters["lora"]["layers"]["self_attn"]["q_proj"]["lora_a"].shape == (cfg.num_layers, 64, 4)
    assert adapters["lora"]["layers"]["self_attn"]["v_proj"]["lora_b"].shape == (cfg.num_layers, 4, 2, 16)


# ----------------------------------------------------------------------------- round trip

ROUND_TRIP = {
    "lora_unscanned": (False, PeftSpec("lora", rank=3, alpha=6.0, dropout=0.1,
                                       target_modules=("gate_proj", "o_proj", "q_proj"))),
    "dora": (True, PeftSpec("dora", rank=2, alpha=2.5, rslora=True, target_modules=("k_proj", "up_proj"))),
    "ia3": (True, PeftSpec("ia3", ia3_target_modules=("down_proj", "k_proj", "v_proj"),
                           ia3_feedforward_modules=("down_proj",))),
    "prompt": (True, PeftSpec("prompt", num_virtual_tokens=5)),
}


@pytest.mark.parametrize("case", sorted(ROUND_TRIP))
def test_round_trip(case, bases, tmp_path):
    scan, spec = ROUND_TRIP[case]
    cfg, params = _layout(*bases("llama")[:2], scan)
    adapters = _adapters(cfg, spec, params, 3, 0.1)
    save_hf_adapter(tmp_path, Transformer(cfg, peft=spec), adapters)
    loaded_spec, loaded = load_hf_adapter(tmp_path, cfg)
    assert loaded_spec == spec
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(adapters)
    jax.tree_util.tree_map(np.testing.assert_array_equal, loaded, adapters)


def test_qlora_is_saved_as_lora(bases, tmp_path):
    cfg, params = bases("llama")[:2]
    spec = PeftSpec("qlora", rank=2, target_modules=("q_proj",))
    save_hf_adapter(tmp_path, Transformer(cfg, peft=spec), _adapters(cfg, spec, params, 0, 0.0))
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert (config["peft_type"], config["use_dora"], config["target_modules"]) == ("LORA", False, ["q_proj"])
    assert load_hf_adapter(tmp_path, cfg)[0].method == "lora"


# ----------------------------------------------------------------------------- errors

@pytest.fixture()
def saved_lora(bases, tmp_path):
    cfg, params = bases("llama")[:2]
    spec = PeftSpec("lora", rank=2, target_modules=("q_proj", "v_proj"))
    save_hf_adapter(tmp_path, Transformer(cfg, peft=spec), _adapters(cfg, spec, params, 0, 0.0))
    return cfg, tmp_path


def _edit_tensors(path, edit):
    with SafetensorsFile(path / "adapter_model.safetensors") as f:
        tensors = {k: f.get(k) for k in f.keys()}
    edit(tensors)
    save_file(path / "adapter_model.safetensors", tensors, metadata={"format": "pt"})


def test_missing_config_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_hf_adapter(tmp_path, tiny_config("llama"))


def test_adapter_for_another_model_is_named(saved_lora):
    _, path = saved_lora
    with pytest.raises(ValueError, match=r"adapter_model\.safetensors: tensor "
                                         r"'base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight'"
                                         r" has shape \(2, 64\), expected \(2, 32\).*another base model"):
        load_hf_adapter(path, tiny_config("llama", hidden_size=32, vocab_size=VOCAB))


@pytest.mark.parametrize("field, value, message", [
    ("peft_type", "LOHA", "peft_type='LOHA' is not supported"),
    ("fan_in_fan_out", True, "fan_in_fan_out=True is not supported"),
    ("bias", "all", "bias='all' is not supported"),
    ("rank_pattern", {"q_proj": 8}, "rank_pattern=.* is not supported"),
    ("layers_to_transform", [0], "layers_to_transform=.* subset of layers"),
    ("modules_to_save", ["lm_head"], "modules_to_save=.* is not supported"),
    ("target_modules", ["q_proj", "embed_tokens"], "target_modules entry 'embed_tokens' is not a codejax"),
    ("target_modules", r"model\.layers\.0\.self_attn\.q_proj", "target_modules selects q_proj on layers \\[0\\] only"),
])
def test_unsupported_config_is_named(saved_lora, field, value, message):
    cfg, path = saved_lora
    config = json.loads((path / "adapter_config.json").read_text())
    config[field] = value
    (path / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"adapter_config.json: {message}"):
        load_hf_adapter(path, cfg)


def test_missing_layer_tensor_is_named(saved_lora):
    cfg, path = saved_lora
    key = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"
    _edit_tensors(path, lambda t: t.pop(key))
    with pytest.raises(KeyError, match=f"missing tensor '{key}'.*other layers have it"):
        load_hf_adapter(path, cfg)


def test_unexpected_tensor_is_named(saved_lora):
    cfg, path = saved_lora
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias"
    _edit_tensors(path, lambda t: t.update({key: np.zeros(64, np.float32)}))
    with pytest.raises(ValueError, match=f"1 tensors are not part of.*{key}"):
        load_hf_adapter(path, cfg)


@pytest.mark.parametrize("method", ["prefix", "adapter"])
def test_methods_without_peft_format_raise(method, tmp_path):
    cfg = tiny_config("llama", vocab_size=VOCAB)
    with pytest.raises(ValueError, match="no equivalent format"):
        save_hf_adapter(tmp_path, Transformer(cfg, peft=PeftSpec(method)), {method: {}})
