"""Synthetic code data: generators over a teacher, quality control, review, and the engine that joins them.

    from codejax.synth import run_synth, GENERATORS, STAGES, verify, safe_tests
    run_synth(config, workdir)      # job `synth`: configs/synth.py

- backends.py: the teacher (codejax's sampler in process, or any OpenAI-compatible endpoint such
  as `python -m codejax.serve`), the completion cache and the token budget;
- methods.py: self_instruct, evol_instruct, oss_instruct, backtranslation, diversify, with their
  prompts in prompts/*.txt and the built-in seed tasks in seeds.jsonl;
- verify.py: sandbox verification with the safe assert form and mutation testing;
- quality.py: the quality-control stages; review.py: the human review file;
- engine.py / report.py: the run and its report.
"""
from codejax.synth.backends import BACKENDS, CachedBackend, Completion, HttpBackend, LocalBackend, Request, TokenBudget
from codejax.synth.engine import check_synth_config, load_seeds, load_snippets, run_synth
from codejax.synth.methods import GENERATORS, Context, Item, Prompts, register_generator
from codejax.synth.parse import parse_reply, rouge_l
from codejax.synth.quality import STAGES, run_quality
from codejax.synth.review import export_review, read_review
from codejax.synth.verify import VerifySettings, safe_tests, verify

__all__ = ["BACKENDS", "CachedBackend", "Completion", "Context", "GENERATORS", "HttpBackend", "Item", "LocalBackend",
           "Prompts", "Request", "STAGES", "TokenBudget", "VerifySettings", "check_synth_config", "export_review",
           "load_seeds", "load_snippets", "parse_reply", "read_review", "register_generator", "rouge_l",
           "run_quality", "run_synth", "safe_tests", "verify"]
