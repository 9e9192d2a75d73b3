"""The KV-cache sampler against the no-cache forward pass and against transformers' generate."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codejax.generate import SamplingParams, generate, greedy_reference
from codejax.models import Transformer, init_params, save_hf, tiny_config
from codejax.peft import PeftSpec, init_adapters

PROMPTS = [[5, 17, 99, 3], [42], [7, 8, 9, 10, 11, 12, 13, 14, 15], [300, 301]]
NO_EOS = SamplingParams(max_new_tokens=10, eos_ids=())


def _noisy(tree, seed=1, scale=0.05):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [x + scale * jax.random.normal(k, x.shape, x.dtype)
                                                  for x, k in zip(leaves, keys)])


def _model(family="llama", **overrides):
    cfg = tiny_config(family, **overrides)
    # Noise makes the logits far from uniform, so argmax ties cannot hide a wrong cache.
    return cfg, Transformer(cfg), _noisy(init_params(cfg, jax.random.PRNGKey(0)), scale=0.3)


@pytest.mark.parametrize("family,overrides", [("llama", {}), ("qwen3", {}), ("starcoder2", {}),
                                              ("mistral", {"sliding_window": 4}),
                                              ("llama", {"scan_layers": False})])
def test_greedy_equals_the_argmax_of_the_no_cache_forward_pass(family, overrides):
    _, model, params = _model(family, **overrides)
    out = generate(model, {"params": params}, None, PROMPTS, NO_EOS)
    for prompt, tokens in zip(PROMPTS, out.tokens):
        assert tokens == greedy_reference(model, {"params": params}, prompt, 10)
    assert out.finish_reasons == ["length"] * len(PROMPTS)


def test_greedy_equals_transformers_generate(tmp_path):
    torch = pytest.importorskip("torch")
    import transformers
    cfg, model, params = _model("qwen2")
    save_hf(tmp_path, cfg, params)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    length = max(map(len, PROMPTS))
    ids = torch.tensor([[0] * (length - len(p)) + p for p in PROMPTS])
    mask = torch.tensor([[0] * (length - len(p)) + [1] * len(p) for p in PROMPTS])
    with torch.no_grad():
        hf_out = hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=10,
                             eos_token_id=None, pad_token_id=0)[:, length:].tolist()
    assert generate(model, {"params": params}, None, PROMPTS, NO_EOS).tokens == hf_out


def test_logprobs_equal_the_training_forward_pass():
    _, model, params = _model("llama")
    out = generate(model, {"params": params}, None, PROMPTS,
                   SamplingParams(max_new_tokens=8, temperature=0.9, top_k=50, top_p=0.95, n=2, eos_ids=()))
    for prompt, tokens, logprobs in zip(out.prompt_tokens, out.tokens, out.logprobs):
        seq = jnp.asarray([prompt + tokens])
        log_softmax = jax.nn.log_softmax(model.apply({"params": params}, seq)[0], axis=-1)
        expected = [float(log_softmax[len(prompt) - 1 + i, t]) for i, t in enumerate(tokens)]
        np.testing.assert_allclose(logprobs, expected, atol=2e-4)


def test_n_samples_differ_and_top_k_1_is_greedy():
    _, model, params = _model("llama")
    variables = {"params": params}
    sampled = generate(model, variables, None, [PROMPTS[0]],
                       SamplingParams(max_new_tokens=10, temperature=1.5, n=4, eos_ids=(), seed=3))
    assert sampled.prompt_index == [0, 0, 0, 0] and len({tuple(t) for t in sampled.tokens}) > 1
    greedy = generate(model, variables, None, [PROMPTS[0]], NO_EOS).tokens[0]
    top1 = generate(model, variables, None, [PROMPTS[0]],
                    SamplingParams(max_new_tokens=10, temperature=1.0, top_k=1, eos_ids=()))
    assert top1.tokens[0] == greedy
    narrow = generate(model, variables, None, [PROMPTS[0]],
                      SamplingParams(max_new_tokens=10, temperature=1.0, top_p=1e-6, eos_ids=()))
    assert narrow.tokens[0] == greedy


def test_stops_at_eos_per_row():
    _, model, params = _model("llama")
    free = generate(model, {"params": params}, None, PROMPTS, NO_EOS).tokens
    eos = free[0][3]  # the 4th greedy token of row 0 becomes EOS
    out = generate(model, {"params": params}, None, PROMPTS, SamplingParams(max_new_tokens=10, eos_ids=(eos,)))
    for row, tokens in zip(free, out.tokens):
        expected = row[:row.index(eos) + 1] if eos in row else row
        assert tokens == expected
    assert out.finish_reasons[0] == "eos" and len(out.tokens[0]) == free[0].index(eos) + 1


def test_stop_strings_cut_the_text(tmp_path):
    from codejax.tokenizer import train_code_tokenizer
    tok = train_code_tokenizer(["def f(x):\n    return x\n\nclass A:\n    pass\n"] * 20, vocab_size=300)
    cfg = tiny_config("llama", vocab_size=len(tok))
    model = Transformer(cfg)
    params = _noisy(init_params(cfg, jax.random.PRNGKey(0)), scale=0.3)
    free = generate(model, {"params": params}, tok, ["def f(x):"], SamplingParams(max_new_tokens=40, eos_ids=()))
    text = free.texts[0]
    assert len(text) > 4
    stop = text[2:4]  # a string the free-running text contains
    out = generate(model, {"params": params}, tok, ["def f(x):"],
                   SamplingParams(max_new_tokens=40, eos_ids=(), stop=(stop,), chunk_size=4))
    assert out.texts[0] == text[:text.find(stop)] and out.finish_reasons[0] == "stop"
    assert stop in tok.decode(out.tokens[0]) and len(out.tokens[0]) < len(free.tokens[0])


@pytest.mark.parametrize("method", ["lora", "prefix", "prompt"])
def test_greedy_with_peft_adapters(method):
    cfg, _, params = _model("llama")
    model = Transformer(cfg, peft=PeftSpec(method, num_virtual_tokens=3))
    variables = {"params": params, **_noisy(init_adapters(model, params, jax.random.PRNGKey(1)), seed=2, scale=0.5)}
    out = generate(model, variables, None, PROMPTS[:2], NO_EOS)
    for prompt, tokens in zip(PROMPTS[:2], out.tokens):
        assert tokens == greedy_reference(model, variables, prompt, 10)
    # The adapter really changes the output (so the comparison above tests it).
    assert out.tokens != generate(Transformer(cfg), {"params": params}, None, PROMPTS[:2], NO_EOS).tokens


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)


def test_on_chunk_sees_every_chunk_and_the_final_tokens():
    _, model, params = _model("llama")
    seen = []
    sp = SamplingParams(max_new_tokens=10, eos_ids=(), chunk_size=3)
    out = generate(model, {"params": params}, None, PROMPTS, sp,
                   on_chunk=lambda tokens, lengths: seen.append((tokens.copy(), lengths.copy())))
    # 10 tokens in chunks of 3: the host is called back after 3, 6, 9 and 10 tokens.
    assert [lengths.tolist() for _, lengths in seen] == [[n] * len(PROMPTS) for n in (3, 6, 9, 10)]
    for tokens, lengths in seen:  # each call shows a prefix of the final completion
        for r, final in enumerate(out.tokens):
            assert tokens[r, :lengths[r]].tolist() == final[:lengths[r]]
    # The callback changes nothing about the result.
    assert out.tokens == generate(model, {"params": params}, None, PROMPTS, sp).tokens
