"""The README's smoke demo and the Colab notebook run end to end on CPU."""
import math
from pathlib import Path

import pytest

from codejax import demo

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_builds_saves_reloads_and_scores(tmp_path):
    figures = demo.run(str(tmp_path), family="starcoder2", vocab_size=400, max_files=20)
    assert (tmp_path / "model" / "config.json").exists()
    assert (tmp_path / "model" / "tokenizer.json").exists()
    assert figures["tokens"] > 10
    # A random model is close to uniform over the vocabulary, not wildly off.
    assert math.isfinite(figures["nll"]) and abs(figures["nll"] - figures["uniform_nll"]) < 1.0
