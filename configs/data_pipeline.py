"""The code data pipeline on the local Python standard library (job `data`, codejax/codedata).

    python -m codejax.main --config configs/data_pipeline.py --workdir runs/data
    python -m codejax.main --config configs/data_pipeline.py:tiny --workdir /tmp/data
    # your own sources: directories, git repos, The Stack-shaped JSONL/parquet files
    python -m codejax.main --config configs/data_pipeline.py --workdir runs/data \
        --config.data_pipeline.sources=/src/repo,/data/stack_python.parquet

Variants: '' (the whole stdlib, ~1,800 files and 31 MB, every cleaning stage and every
task builder), 'tiny' (60 stdlib files and five quick tasks, under a minute on 2 CPU
cores). Then fine-tune on the output with configs/sft.py:
`--config.data.train_paths='runs/data/train-*.jsonl' --config.data.eval_paths='runs/data/eval-*.jsonl'`,
and DPO on `preference-train-*.jsonl`.
"""
from codejax.config import apply_variants, base_config

VARIANTS = ["", "tiny"]
ALL_TASKS = ("function_impl,completion,fim,test_generation,docstring,bug_detection,variable_naming,"
             "type_inference,code_search,repair,refactor,preference")


def get_config(arg=None):
    c = base_config()
    c.job = "data"
    d = c.data_pipeline
    d.sources = "stdlib"
    d.tasks = ALL_TASKS
    # Lift the small tasks (type_inference, test_generation have few rows in the stdlib)
    # without letting them dominate: p_i ∝ n_i^(1/2).
    d.mix_strategy = "temperature"
    d.mix_temperature = 2.0
    return apply_variants(c, arg, __file__, tiny=_tiny)


def _tiny(c):
    d = c.data_pipeline
    d.max_files = 60
    d.workers = 2
    d.tasks = "function_impl,completion,docstring,code_search,preference"
    d.eval_fraction = 0.2  # enough held-out packages among 60 files to see the split work
    d.curriculum, d.curriculum_schedule = "complexity", "buckets:3"
