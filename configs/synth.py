"""Synthetic instruction data for code (job `synth`, codejax/synth).

    python -m codejax.main --config configs/synth.py:tiny --workdir runs/synth_tiny   # nothing else needed
    python -m codejax.main --config configs/synth.py --workdir runs/synth \
        --config.synth.model_path=/models/deepseek-coder-6.7b-instruct \
        --config.synth.snippets_path='runs/data/train-*.jsonl'
    python -m codejax.main --config configs/synth.py --workdir runs/synth_http --config.synth.backend=http \
        --config.synth.url=http://127.0.0.1:8000/v1 --config.synth.http_model=teacher   # key: $OPENAI_API_KEY

Variants: '' (a real teacher: 512 candidates per method), 'tiny' (a random tiny local model,
8 candidates per method, under 2 minutes on a CPU: it exercises every stage, and what survives
is mostly the seeds' verified answers under new wording). Fine-tune on the output:
`configs/sft.py --config.data.train_paths='runs/synth/train-*.jsonl'` (data.format=alpaca, or
chat with --config.synth.output_format=chat).
"""
from codejax.config import apply_variants, base_config

VARIANTS = ["", "tiny"]


def get_config(arg=None):
    c = base_config()
    c.job = "synth"
    c.synth.items_per_method = 512
    c.model.dtype = "bfloat16"
    return apply_variants(c, arg, __file__, tiny=_tiny)


def _tiny(c):
    c.model.preset = "tiny"
    c.model.dtype = "float32"
    c.tokenizer.path = c.tokenizer.path or "builtin"
    s = c.synth
    s.items_per_method = 8
    s.batch_size = 8
    s.max_new_tokens = 48
    s.evol_generations = 1
    s.mutants = 2
    s.max_snippets, s.max_snippet_chars = 40, 600  # the tiny model holds 512 positions
    s.min_instruction_chars = 10
    s.min_prose_fraction = 0.3  # a random model's wording: the tiny run checks the plumbing, not the prose
