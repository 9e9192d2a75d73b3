"""Fixtures for the data pipeline tests: one tiny tokenizer, trained once per session."""

import pytest

from codejax.tokenizer import train_code_tokenizer

CODE_TEXTS = [
    "def add(a, b):\n    return a + b\n",
    "def lcs(s1: str, s2: str) -> int:\n    m, n = len(s1), len(s2)\n    return m + n\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n"
    "        self.items.append(x)\n",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i)\n",
    "Write a function that returns the sum of a list.\n",
] * 10


@pytest.fixture(scope="session")
def tok():
    """A byte-level BPE tokenizer with codejax's specials (pad == eos == 0), trained in < 1 s."""
    return train_code_tokenizer(CODE_TEXTS, vocab_size=400)

