"""Job `synth`: synthetic instruction data for code from a teacher model (codejax/synth).

    python -m codejax.main --config configs/synth.py:tiny --workdir runs/synth_tiny
    python -m codejax.main --config configs/synth.py --workdir runs/synth \
        --config.synth.model_path=/models/qwen2.5-coder-7b-instruct
    OPENAI_API_KEY=... python -m codejax.main --config configs/synth.py --workdir runs/synth_api \
        --config.synth.backend=http --config.synth.url=http://127.0.0.1:8000/v1 --config.synth.http_model=teacher

Then fine-tune on it: `configs/sft.py --config.data.train_paths='runs/synth/train-*.jsonl'`.
A killed or repeated run reuses the teacher's cached completions (WORKDIR/cache).
"""
from __future__ import annotations

from codejax.jobs import register
from codejax.synth import run_synth


@register("synth")
def run_synth_job(config, workdir: str) -> dict:
    return run_synth(config, workdir)
