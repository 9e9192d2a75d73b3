"""Multi-turn sampling: sequences end turns at different times, replies go in as forced tokens, and every
sampled token's log-prob is what one forward pass over the whole episode gives."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers

from codejax.generate import SamplingParams, generate, generate_turns
from codejax.generate.turns import encode_reply, reply_wrapper
from codejax.models import Transformer, init_params, tiny_config


@pytest.fixture(scope="module")
def setup(chat_tokenizer_dir):
    tok = transformers.AutoTokenizer.from_pretrained(chat_tokenizer_dir)
    cfg = tiny_config("llama", vocab_size=len(tok))
    params = init_params(cfg, jax.random.PRNGKey(0))
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    params = jax.tree_util.tree_unflatten(tree, [x + 0.3 * jax.random.normal(k, x.shape, x.dtype)
                                                 for x, k in zip(leaves, keys)])
    prompts = [tok.apply_chat_template([{"role": "user", "content": "hi " * k}], add_generation_prompt=True,
                                       tokenize=False) for k in (1, 4)]
    return tok, Transformer(cfg), {"params": params}, prompts


@pytest.fixture(scope="module")
def episodes(setup):
    """One batch of 6 episodes (2 prompts x 3), up to 3 turns, and every respond() call."""
    tok, model, variables, prompts = setup
    calls = []

    def respond(rows, texts, last):
        calls.append((list(rows), list(texts), list(last)))
        return [f"reply to {r}" for r in rows]

    # A third of the vocabulary ends a turn, so turns are short and end at different steps per sequence.
    params = SamplingParams(max_new_tokens=64, temperature=1.0, n=3, eos_ids=tuple(range(2, len(tok), 3)),
                            chunk_size=4, seed=3)
    return generate_turns(model, variables, tok, prompts, params, respond, max_turns=3, max_reply_tokens=48), calls


def test_sampled_logprobs_match_one_forward_pass_over_the_episode(setup, episodes):
    tok, model, variables, _ = setup
    ep, calls = episodes
    assert len(set(map(len, ep.turns))) > 1 or len(set(len(t) for t in ep.tokens)) > 1  # not in lockstep
    for prompt, toks, logps, sampled in zip(ep.prompt_tokens, ep.tokens, ep.logprobs, ep.sampled_mask):
        full = prompt + toks
        logp = jax.nn.log_softmax(model.apply(variables, jnp.asarray([full]))[0], -1)
        p = len(prompt)
        want = np.asarray([logp[p - 1 + t, full[p + t]] for t in range(len(toks))])
        np.testing.assert_allclose(np.asarray(logps)[np.asarray(sampled) == 1], want[np.asarray(sampled) == 1],
                                   atol=2e-5)
        assert not any(np.asarray(logps)[np.asarray(sampled) == 0])  # replies carry no sampler log-prob


def test_replies_are_the_templates_tool_turns_and_turns_are_bounded(setup, episodes):
    tok = setup[0]
    ep, calls = episodes
    wrapper = reply_wrapper(tok)
    assert wrapper == ("\n", "<|im_start|>tool\n{}<|im_end|>\n<|im_start|>assistant\n")
    for r, (toks, sampled, turns, replies) in enumerate(zip(ep.tokens, ep.sampled_mask, ep.turns, ep.replies)):
        assert 1 <= len(turns) <= 3 and len(replies) <= len(turns) - (ep.finish_reasons[r] == "eos")
        forced = [t for t, s in zip(toks, sampled) if s == 0]
        assert forced == sum((encode_reply(tok, wrapper, text, 48) for text in replies), [])
        assert all(text == f"reply to {r}" for text in replies)
        assert ep.texts[r] == turns[-1]
    # respond saw every turn that ended with the end-of-turn token, and `last` only on the third
    seen = {}
    for rows, _, last in calls:
        for row, is_last in zip(rows, last):
            seen.setdefault(row, []).append(is_last)
    for row, flags in seen.items():
        assert flags == [False] * (len(flags) - 1) + [len(flags) == 3]


def test_one_turn_episodes_are_the_single_turn_sampler(setup):
    tok, model, variables, prompts = setup
    params = SamplingParams(max_new_tokens=24, temperature=1.0, n=2, eos_ids=tuple(range(2, len(tok), 5)),
                            chunk_size=8, seed=5)
    ep = generate_turns(model, variables, tok, prompts, params, lambda rows, texts, last: [None] * len(rows),
                        max_turns=1)
    single = generate(model, variables, tok, prompts, params)
    assert ep.tokens == single.tokens and ep.finish_reasons == single.finish_reasons
    np.testing.assert_allclose(sum(ep.logprobs, []), sum(single.logprobs, []), atol=1e-6)


def test_a_long_reply_is_cut_and_says_so(setup):
    tok = setup[0]
    ids = encode_reply(tok, reply_wrapper(tok), "x = 1\n" * 400, 40)
    text = tok.decode(ids)
    assert len(ids) <= 40 and "characters cut]" in text and text.endswith("<|im_start|>assistant\n")
    with pytest.raises(ValueError, match="stop strings"):
        generate_turns(setup[1], setup[2], tok, setup[3], SamplingParams(stop=("x",)), lambda *a: [], max_turns=2)
