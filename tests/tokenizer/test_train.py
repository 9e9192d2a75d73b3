"""Tests for codejax.tokenizer.train: training, the saved HF directory, chat template, FIM."""

import itertools
import logging

import pytest
from tokenizers import pre_tokenizers
from transformers import AutoTokenizer

from codejax.tokenizer import train as T

# Small enough to train in well under a second, big enough to learn some merges.
N_FILES = 30
VOCAB = 600

TRICKY = [
    "def f(x):\n\treturn x  # tab-indented\n",
    "x = 1 ,  y = 2 ;   z=3\n\n\n",                       # clean-up-prone spaces
    "    \n  \t \r\n\x0b\x0c trailing   ",                 # whitespace soup
    "s = 'héllo wörld — ñ 日本語 🐍👩‍💻'\n",                   # multi-byte + ZWJ
    "\ufeff# BOM, NUL \x00 and \u2028 separators\n",
    "if a<b and c>=d: print(f'{a!r:>10}')\\\n",
    "almost special: <|im_end| <|endoftext <|fim_pad>\n",
    "",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small stdlib-trained tokenizer (saved to disk) shared by the whole module."""
    out_dir = tmp_path_factory.mktemp("tok")
    tok, stats = T.train_stdlib_tokenizer(out_dir, vocab_size=VOCAB, max_files=N_FILES)
    return tok, stats, out_dir


@pytest.fixture(scope="module")
def tok(trained):
    return trained[0]


@pytest.fixture(scope="module")
def loaded(trained):
    return AutoTokenizer.from_pretrained(str(trained[2]))


def _runs(ids, mask):
    """Contiguous (mask_value, token_ids) runs, to decode each masked/unmasked span."""
    return [(k, [i for i, _ in g]) for k, g in itertools.groupby(zip(ids, mask), key=lambda p: p[1])]


CONVO = [
    {"role": "system", "content": "You write Python."},
    {"role": "user", "content": "Add two numbers."},
    {"role": "assistant", "content": "def add(a, b):\n    return a + b"},
    {"role": "tool", "content": "tests: 3 passed"},
    {"role": "user", "content": "Indent it."},
    {"role": "assistant", "content": "    return a + b  # é"},
]

CONVO_TEXT = (
    "<|im_start|>system\nYou write Python.<|im_end|>\n"
    "<|im_start|>user\nAdd two numbers.<|im_end|>\n"
    "<|im_start|>assistant\ndef add(a, b):\n    return a + b<|im_end|>\n"
    "<|im_start|>tool\ntests: 3 passed<|im_end|>\n"
    "<|im_start|>user\nIndent it.<|im_end|>\n"
    "<|im_start|>assistant\n    return a + b  # é<|im_end|>\n"
)


def test_stdlib_training_reads_requested_files(trained):
    tok, stats, _ = trained
    assert stats.files_read == N_FILES
    assert stats.bytes_read > 0
    assert len(tok) == VOCAB  # 30 stdlib files easily supply 337 merges


def test_training_is_deterministic(tok):
    texts = list(T.iter_stdlib_sources(max_files=N_FILES))
    retrained = T.train_code_tokenizer(texts, vocab_size=VOCAB)
    assert retrained.get_vocab() == tok.get_vocab()
    assert retrained.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()


def test_saved_dir_loads_with_autotokenizer_and_gives_identical_ids(tok, loaded, trained):
    assert (trained[2] / "tokenizer.json").is_file()
    assert (trained[2] / "tokenizer_config.json").is_file()
    for text in TRICKY + [CONVO_TEXT, T.fim_format("a = ", "1", "\n")]:
        assert loaded.encode(text, add_special_tokens=False) == tok.encode(text, add_special_tokens=False)
    assert loaded.chat_template == T.CHAT_TEMPLATE
    assert loaded.eos_token == loaded.pad_token == T.ENDOFTEXT
    assert loaded.bos_token is None
    assert loaded.model_max_length == T.DEFAULT_MODEL_MAX_LENGTH


def test_special_tokens_have_fixed_leading_ids_and_are_single_tokens(loaded):
    assert T.SPECIAL_TOKENS == ("<|endoftext|>", "<|im_start|>", "<|im_end|>",
                                "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>")
    for expected_id, special in enumerate(T.SPECIAL_TOKENS):
        assert loaded.convert_tokens_to_ids(special) == expected_id
        assert loaded.encode(special, add_special_tokens=False) == [expected_id]
        # Glued to identifiers on both sides it must still not be split.
        ids = loaded.encode(f"foo{special}bar", add_special_tokens=False)
        assert ids.count(expected_id) == 1
        assert loaded.decode(ids) == f"foo{special}bar"
    assert set(loaded.all_special_tokens) == set(T.SPECIAL_TOKENS)
    assert loaded.eos_token_id == loaded.pad_token_id == 0
    # The 256 byte symbols come right after, as documented.
    byte_ids = range(len(T.SPECIAL_TOKENS), len(T.SPECIAL_TOKENS) + 256)
    assert set(loaded.convert_ids_to_tokens(list(byte_ids))) == set(pre_tokenizers.ByteLevel.alphabet())
    # Ordinary text never produces special ids.
    assert not set(loaded.encode(TRICKY[0], add_special_tokens=False)) & set(range(len(T.SPECIAL_TOKENS)))


@pytest.mark.parametrize("text", TRICKY)
def test_decode_encode_roundtrip_is_exact(loaded, text):
    ids = loaded.encode(text, add_special_tokens=False)
    assert loaded.decode(ids) == text


def test_unseen_bytes_still_encode(loaded):
    # Characters absent from the stdlib corpus must fall back to byte tokens, not <unk>.
    text = "\U0001f9ea\u0e01\u10d0"
    ids = loaded.encode(text, add_special_tokens=False)
    assert len(ids) == len(text.encode("utf-8"))
    assert loaded.decode(ids) == text


def test_chat_template_renders_exact_chatml(loaded):
    assert loaded.apply_chat_template(CONVO, tokenize=False) == CONVO_TEXT


def test_add_generation_prompt_appends_assistant_header(loaded):
    convo = CONVO[:2]
    without = loaded.apply_chat_template(convo, tokenize=False)
    with_prompt = loaded.apply_chat_template(convo, tokenize=False, add_generation_prompt=True)
    assert with_prompt == without + "<|im_start|>assistant\n"
    assert without.endswith("<|im_end|>\n")


def test_unknown_role_is_rejected(loaded):
    with pytest.raises(Exception, match="Unsupported chat role: robot"):
        loaded.apply_chat_template([{"role": "robot", "content": "hi"}], tokenize=False)


def test_assistant_mask_is_exactly_assistant_content_plus_im_end(loaded):
    out = loaded.apply_chat_template(CONVO, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert len(mask) == len(ids)
    runs = _runs(ids, mask)
    masked = [loaded.decode(r) for k, r in runs if k == 1]
    unmasked = [loaded.decode(r) for k, r in runs if k == 0]
    assert masked == [CONVO[2]["content"] + T.IM_END, CONVO[5]["content"] + T.IM_END]
    # Everything else, including both "<|im_start|>assistant\n" headers and the "\n" after
    # each <|im_end|>, is unmasked.
    assert unmasked[0].endswith("<|im_start|>assistant\n")
    assert unmasked[1].startswith("\n<|im_start|>tool") and unmasked[1].endswith("<|im_start|>assistant\n")
    assert unmasked[2] == "\n"
    assert "".join(loaded.decode(r) for _, r in runs) == CONVO_TEXT


def test_assistant_mask_excludes_header_newline_when_content_is_indented():
    # A corpus dominated by indented lines guarantees a merged "\n" + indentation token,
    # the token that would straddle the header/content boundary without the first-line split.
    tok = T.train_code_tokenizer(["def f():\n    return 1\n    pass\n"] * 50, vocab_size=300)
    assert tok.convert_tokens_to_ids("ĊĠĠĠ") is not None  # precondition: the merge exists
    convo = [{"role": "user", "content": "go"}, {"role": "assistant", "content": "    return 1"}]
    out = tok.apply_chat_template(convo, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    runs = _runs(out["input_ids"], out["assistant_masks"])
    assert [tok.decode(r) for k, r in runs if k == 1] == ["    return 1" + T.IM_END]
    # Same header tokens as the inference-time prompt, so training matches generation.
    prompt = tok.apply_chat_template(convo[:1], add_generation_prompt=True, return_dict=False)
    assert out["input_ids"][: len(prompt)] == prompt


@pytest.mark.parametrize(
    "mode,expected",
    [
        ("psm", "<|fim_prefix|>def f(<|fim_suffix|>):\n<|fim_middle|>x"),
        ("spm", "<|fim_prefix|><|fim_suffix|>):\n<|fim_middle|>def f(x"),
    ],
)
def test_fim_format_layouts(loaded, mode, expected):
    text = T.fim_format("def f(", "x", "):\n", mode=mode)
    assert text == expected
    ids = loaded.encode(text, add_special_tokens=False)
    sentinel_ids = [loaded.convert_tokens_to_ids(t) for t in (T.FIM_PREFIX, T.FIM_SUFFIX, T.FIM_MIDDLE)]
    # Each sentinel appears exactly once, as one token, in prefix < suffix < middle order.
    assert [i for i in ids if i in sentinel_ids] == sentinel_ids
    assert loaded.decode(ids) == text


def test_fim_format_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        T.fim_format("a", "b", "c", mode="pms")


def _make_tree(root):
    (root / "pkg").mkdir()
    (root / "pkg" / "b.py").write_text("b = 2\n")
    (root / "a.py").write_text("a = 'é'\n", encoding="utf-8")
    (root / "bad.py").write_bytes(b"x = '\xff\xfe'\n")  # latin-1, not UTF-8
    (root / "notes.txt").write_text("not python\n")
    for skipped_dir in ("site-packages", "test"):
        (root / skipped_dir).mkdir()
        (root / skipped_dir / "c.py").write_text("c = 3\n")


def test_iter_sources_counts_non_utf8_file_as_skipped(tmp_path, caplog):
    _make_tree(tmp_path)
    stats = T.CorpusStats()
    with caplog.at_level(logging.WARNING, logger=T.__name__):
        texts = list(T.iter_stdlib_sources(tmp_path, stats=stats))
    assert texts == ["a = 'é'\n", "b = 2\n"]  # sorted: a.py, (bad.py skipped), pkg/b.py
    assert stats.files_read == 2 and stats.files_skipped == 1
    assert stats.bytes_read == len("a = 'é'\nb = 2\n".encode("utf-8"))
    (path, reason), = stats.skipped
    assert path.endswith("bad.py") and "UTF-8" in reason
    assert "Skipped 1 of 3" in caplog.text


def test_iter_sources_limits_and_test_dirs(tmp_path):
    _make_tree(tmp_path)
    assert list(T.iter_stdlib_sources(tmp_path, max_files=1)) == ["a = 'é'\n"]
    # max_bytes is a soft cap: the file that reaches it is still yielded whole.
    assert list(T.iter_stdlib_sources(tmp_path, max_bytes=1)) == ["a = 'é'\n"]
    with_tests = list(T.iter_stdlib_sources(tmp_path, include_tests=True))
    assert with_tests == ["a = 'é'\n", "b = 2\n", "c = 3\n"]  # site-packages is never included


def test_default_root_is_stdlib_without_site_packages():
    files = T.list_source_files(T.stdlib_root())
    rel = {p.relative_to(T.stdlib_root()).as_posix() for p in files}
    assert "os.py" in rel and "json/__init__.py" in rel
    assert not any("site-packages" in r or r.startswith("test/") for r in rel)


def test_vocab_size_too_small_is_rejected():
    with pytest.raises(ValueError, match=r"vocab_size must be >= 263"):
        T.train_code_tokenizer(["x = 1\n"], vocab_size=T.MIN_VOCAB_SIZE - 1)


@pytest.mark.parametrize("texts", [[], ["", ""], iter([])])
def test_empty_corpus_is_rejected(texts):
    with pytest.raises(ValueError, match="empty"):
        T.train_code_tokenizer(texts, vocab_size=T.MIN_VOCAB_SIZE)


def test_single_string_corpus_is_rejected():
    with pytest.raises(TypeError, match="iterable of strings"):
        T.train_code_tokenizer("x = 1\n", vocab_size=T.MIN_VOCAB_SIZE)
