"""Shared fixtures: HumanEval (loaded once), an MBPP-format file, a tokenizer with a chat template."""
import json

import pytest

from codejax.evaluation import load_task
from codejax.tokenizer import train_code_tokenizer

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
    return load_task("humaneval")


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
