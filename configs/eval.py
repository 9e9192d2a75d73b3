"""Evaluate a model on HumanEval / MBPP: sample completions, run them in the sandbox, report pass@k.

    python -m codejax.main --config configs/eval.py --workdir /tmp/eval \
        --config.model.hf_path=/models/qwen2.5-coder-1.5b
    python -m codejax.main --config configs/eval.py --workdir /tmp/eval_sft \
        --config.eval.checkpoint_dir=/runs/sft --config.eval.mode=chat
    python -m codejax.main --config configs/eval.py --workdir /tmp/eval_mbpp \
        --config.model.hf_path=/models/m --config.eval.task=mbpp --config.eval.problems_path=mbpp_test.jsonl
    python -m codejax.main --config configs/eval.py:tiny --workdir /tmp/eval_tiny \
        --config.tokenizer.path=TOKENIZER_DIR

Variants: '' (pass@1 and pass@10 from 20 samples per problem at temperature 0.2, as in
Codex/bigcode reports; --config.eval.n_samples=1 --config.eval.temperature=0 for greedy
pass@1), 'tiny' (a random tiny model on 3 problems: checks the whole path in under a minute).
"""
from codejax.config import apply_variants, base_config, make_tiny

VARIANTS = ["", "tiny"]


def _real(c):
    c.model.dtype = "bfloat16"
    c.eval.n_samples = 20
    c.eval.temperature = 0.2
    c.eval.top_p = 0.95
    c.eval.k = "1,10"


def _tiny(c):
    make_tiny(c)
    c.eval.limit = 3
    c.eval.n_samples = 2
    c.eval.temperature = 0.8
    c.eval.max_new_tokens = 16
    c.eval.k = "1,2"
    c.eval.timeout_s = 5.0


def get_config(arg=None):
    c = base_config()
    c.job = "eval"
    c.eval.task = "humaneval"
    return apply_variants(c, arg, __file__, tiny=_tiny, real=_real)
