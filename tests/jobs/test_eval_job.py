"""Job `eval` end to end on a tiny random model, and restoring a training run's checkpoint."""
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers

from codejax.config import load_config_file
from codejax.jobs import get_job
from codejax.evaluation.sampling import encode_prompts
from codejax.evaluation.sampling import eos_ids as _eos_ids
from codejax.models import Transformer, init_params, logical_axes, save_hf, tiny_config
from codejax.parallel import parallel_from_config
from codejax.setup import build_params, load_model, load_tokenizer, model_config, prepare_peft, resolve_spec
from codejax.setup import with_run_config
from codejax.train.checkpoint import Checkpointer, find_checkpoint

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _set(config, **fields):
    for dotted, value in fields.items():
        section, name = dotted.split(".")
        setattr(getattr(config, section), name, value)
    return config


@jax.jit
def _noisy(tree, seed):  # jitted: op-by-op random draws per leaf take seconds on CPU
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [x + 0.1 * jax.random.normal(k, x.shape, x.dtype)
                                                  for x, k in zip(leaves, keys)])


@pytest.mark.slow
def test_eval_job_generates_scores_and_writes_its_files(chat_tokenizer_dir, tmp_path, capsys):
    tokenizer = transformers.AutoTokenizer.from_pretrained(chat_tokenizer_dir)
    cfg = tiny_config("llama", vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
    params = jax.jit(lambda: init_params(cfg, jax.random.PRNGKey(0)))()
    save_hf(tmp_path / "model", cfg, params, tokenizer=tokenizer)
    config = _set(load_config_file(f"{CONFIGS / 'eval.py'}:tiny"), **{
        "model.hf_path": str(tmp_path / "model"), "eval.quality": True, "eval.workers": 2,
        "train.progress_bar": True})
    assert (config.eval.limit, config.eval.n_samples, config.eval.max_new_tokens) == (3, 2, 16)
    workdir = tmp_path / "eval"
    summary = get_job("eval")(config, str(workdir))
    assert summary["problems_scored"] == 3 and summary["samples"] == 6 and summary["problems_missing"] == 0
    err = capsys.readouterr().err
    assert "generate: 100%" in err and "6/6" in err  # the generation progress bar
    assert set(summary["pass_at_k"]) == {"pass@1", "pass@2"} and 0.0 <= summary["pass_at_k"]["pass@1"] <= 1.0
    assert summary["generation"]["samples"] == 6 and summary["model"]["hf_path"] == str(tmp_path / "model")
    assert "syntax_valid_rate" in summary["quality"]
    samples = [json.loads(line) for line in (workdir / "samples.jsonl").read_text().splitlines()]
    assert [(s["task_id"], s["sample"]) for s in samples] == [
        (f"HumanEval/{i}", j) for i in range(3) for j in range(2)]
    assert all(s["num_tokens"] <= 16 and s["finish_reason"] in ("eos", "stop", "length") for s in samples)
    assert json.loads((workdir / "summary.json").read_text())["pass_at_k"] == summary["pass_at_k"]
    assert len((workdir / "results.jsonl").read_text().splitlines()) == 3
    assert json.loads((workdir / "config.json").read_text())["job"] == "eval"


def test_prompt_encoding_and_chat_stop_tokens(chat_tokenizer_dir):
    tokenizer = transformers.AutoTokenizer.from_pretrained(chat_tokenizer_dir)
    ids = encode_prompts(tokenizer, ["def f():", "<|im_start|>user\nhi<|im_end|>\n"], "chat")
    assert ids[0] == tokenizer("def f():", add_special_tokens=False)["input_ids"]
    assert ids[1][0] == tokenizer.convert_tokens_to_ids("<|im_start|>")  # special tokens parsed, not spelt out
    model = Transformer(tiny_config("llama", eos_token_id=tokenizer.eos_token_id))
    assert _eos_ids(tokenizer, model, "completion", "") == (tokenizer.eos_token_id,)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in _eos_ids(tokenizer, model, "chat", "")


def _run_dir(tmp_path, variant, tokenizer_dir):
    """A training run's workdir as the sft job leaves it: config.json and checkpoints/<step>/."""
    config = _set(load_config_file(f"{CONFIGS / variant}"), **{"tokenizer.path": tokenizer_dir})
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(config.to_json_best_effort(indent=2))
    return config, run


def _save(run, trainable, step=7):
    state = {"step": jnp.asarray(step, jnp.int32), "params": trainable, "opt_state": {"mu": trainable},
             "rng": jax.random.PRNGKey(0)}
    with Checkpointer(run / "checkpoints", save_every=1, async_save=False) as ckpt:
        ckpt.save(step, state, {"epoch": 0}, force=True)


def _eval_config(run):
    return _set(load_config_file(f"{CONFIGS / 'eval.py'}:tiny"), **{"eval.checkpoint_dir": str(run)})


def _assert_same(a, b):
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (_, x), (_, y) in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_full_fine_tuning_checkpoint_is_restored(tmp_path, chat_tokenizer_dir):
    train_config, run = _run_dir(tmp_path, "sft.py:tiny", chat_tokenizer_dir)
    tokenizer = load_tokenizer(train_config)
    cfg = model_config(train_config, tokenizer)
    trained = _noisy(build_params(train_config, cfg, parallel_from_config(train_config.parallel)), 1)
    _save(run, {"params": trained})
    step_dir, step, run_dir = find_checkpoint(str(run))
    assert (step, run_dir) == (7, str(run)) and find_checkpoint(str(run / "checkpoints"))[0] == step_dir
    assert find_checkpoint(step_dir)[:2] == (step_dir, 7)
    assert find_checkpoint(os.path.relpath(run))[0] == step_dir  # Orbax restores absolute paths only
    config = with_run_config(_eval_config(run), run_dir)
    assert config.tokenizer.path == chat_tokenizer_dir and config.model.preset == "tiny"
    model, variables, info = load_model(config, tokenizer, step_dir)
    assert list(variables) == ["params"] and info["peft"] == "none"
    _assert_same(variables["params"], trained)
    with pytest.raises(ValueError, match="holds a 'sft' run; the 'eval' job cannot run in it.*gets its own"):
        get_job("eval")(_eval_config(run), str(run))


@pytest.mark.slow
def test_lora_checkpoint_restores_the_adapters_onto_the_base(tmp_path, chat_tokenizer_dir):
    train_config, run = _run_dir(tmp_path, "sft_peft.py:tiny", chat_tokenizer_dir)
    tokenizer = load_tokenizer(train_config)
    cfg = model_config(train_config, tokenizer)
    spec, _ = resolve_spec(train_config, cfg, tokenizer)
    par = parallel_from_config(train_config.parallel)
    base = build_params(train_config, cfg, par)  # a new random base from the run's seed, as sft made it
    _, peft_variables, _ = prepare_peft(train_config, spec, cfg, base, logical_axes(cfg), par)
    trained = _noisy(peft_variables.trainable, 2)
    _save(run, trained)
    step_dir, _, run_dir = find_checkpoint(str(run))
    config = with_run_config(_eval_config(run), run_dir)
    assert config.peft.method == spec.method != "none"
    model, variables, info = load_model(config, tokenizer, step_dir)
    assert model.peft.method == spec.method and set(variables) == {"params", *trained}
    _assert_same({k: variables[k] for k in trained}, trained)
    _assert_same(variables["params"], base)  # the base is rebuilt from the run's seed
