"""Session set-up shared by every test: 8 fake CPU devices for the sharding tests, the `slow` marker,
and the fixtures several test folders share (HumanEval, an MBPP file, a chat tokenizer, the arithmetic
environment's tokenizer and data files).

XLA reads the flag when JAX first initialises its backends, so it is set here,
before any test module imports jax. Single-device code runs on device 0 as usual.
"""
import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json  # noqa: E402 - after XLA_FLAGS, before anything imports jax

import pytest  # noqa: E402

from codejax.evaluation import load_benchmark  # noqa: E402
from codejax.rl.environments import arith_pairs, arith_prompts, arith_sft_rows  # noqa: E402
from codejax.tokenizer import save_tokenizer, train_code_tokenizer  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end jobs and learning evidence (deselect with -m 'not slow')")
    if getattr(config.option, "durations", None) is None:
        config.option.durations = 25  # the slowest tests, printed at the end: the suite has a 30-minute budget


def _run_temp(tmp_path_factory):
    """This pytest run's temp folder, shared by its xdist workers (each worker's basetemp is below it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session", autouse=True)
def builtin_cache(tmp_path_factory):
    """The built-in tokenizer and data (codejax/data/builtin.py) live in this run's temp tree, shared by the
    xdist workers, never in the user's ~/.cache. Subprocesses inherit it."""
    path = _run_temp(tmp_path_factory) / "codejax_cache"
    os.environ["CODEJAX_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """One JAX persistent compilation cache for the run: its workers and the subprocesses its tests start
    (CLI runs, notebooks, experiments) compile the same tiny models again and again, and on 2 cores
    compiling is most of a tiny run's time. Empty at the start of every run, so nothing carries over."""
    import jax
    path = str(_run_temp(tmp_path_factory) / "jax_compilation_cache")
    settings = {"jax_compilation_cache_dir": path, "jax_persistent_cache_min_compile_time_secs": 0,
                "jax_persistent_cache_min_entry_size_bytes": 0}
    for name, value in settings.items():
        jax.config.update(name, value)
        os.environ[name.upper()] = str(value)
    return path


MBPP_ROWS = [
    {"task_id": 11,
     "text": "Write a python function to remove first and last occurrence of a given character from the string.",
     "code": ("def remove_Occ(s,ch): \r\n    for i in range(len(s)): \r\n        if (s[i] == ch): \r\n"
              "            s = s[0 : i] + s[i + 1:] \r\n            break\r\n"
              "    for i in range(len(s) - 1,-1,-1):  \r\n        if (s[i] == ch): \r\n"
              "            s = s[0 : i] + s[i + 1:] \r\n            break\r\n    return s "),
     "test_list": ['assert remove_Occ("hello","l") == "heo"', 'assert remove_Occ("abcda","a") == "bcd"',
                   'assert remove_Occ("PHP","P") == "H"'],
     "test_setup_code": "", "challenge_test_list": []},
    {"task_id": 12, "text": "Write a function to find the similar elements from the given two tuple lists.",
     "code": ("def similar_elements(test_tup1, test_tup2):\n  res = tuple(set(test_tup1) & set(test_tup2))\n"
              "  return (res) "),
     "test_list": ["assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))",
                   "assert sorted(similar_elements((1, 2, 3, 4),(5, 4, 3, 7))) == [3, 4]"],
     "test_setup_code": "import math", "challenge_test_list": ["assert similar_elements((1,), (2,)) == ()"]},
]


@pytest.fixture(scope="session")
def humaneval():
    return load_benchmark("humaneval")


@pytest.fixture()
def mbpp_file(tmp_path):
    path = tmp_path / "mbpp.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in MBPP_ROWS))
    return path


@pytest.fixture(scope="session")
def chat_tokenizer_dir(tmp_path_factory, humaneval):
    """A small byte-level BPE tokenizer (ChatML template, eos <|endoftext|>) trained on HumanEval."""
    path = tmp_path_factory.mktemp("tokenizer")
    texts = [p.prompt + p.reference for p in humaneval.problems]
    train_code_tokenizer(texts, vocab_size=400).save_pretrained(path)
    return str(path)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="session")
def arith_dir(tmp_path_factory):
    """A tokenizer trained on the task's text, and train/eval files for each kind of job."""
    root = tmp_path_factory.mktemp("arith")
    texts = [r["prompt"] + r["answer"] for r in arith_prompts(2000, seed=99)]
    save_tokenizer(train_code_tokenizer(texts, vocab_size=320, min_frequency=1), root / "tokenizer")
    write_jsonl(root / "pairs_train.jsonl", arith_pairs(512, seed=1))
    write_jsonl(root / "pairs_eval.jsonl", arith_pairs(64, seed=2))
    write_jsonl(root / "sft_train.jsonl", arith_sft_rows(1024, seed=3))
    write_jsonl(root / "prompts_train.jsonl", arith_prompts(256, seed=4))
    write_jsonl(root / "prompts_eval.jsonl", arith_prompts(32, seed=5))
    return root
