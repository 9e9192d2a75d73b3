"""Job `constitutional`: Constitutional-AI data for code assistants (codejax/alignment).

    python -m codejax.main --config configs/constitutional.py:tiny --workdir runs/cai_tiny
    python -m codejax.main --config configs/constitutional.py --workdir runs/cai \
        --config.cai.policy_path=runs/sft --config.cai.critic=teacher \
        --config.synth.backend=http --config.synth.url=http://127.0.0.1:8000/v1 --config.synth.http_model=teacher

Then train on it: `configs/sft.py --config.data.format=chat --config.data.train_paths='runs/cai/sft-*.jsonl'`
and `configs/dpo.py --config.data.train_paths='runs/cai/preference-*.jsonl'`. A killed or repeated
run reuses the cached replies and critiques (WORKDIR/cache).
"""
from __future__ import annotations

from codejax.alignment import run_constitutional
from codejax.jobs import register


@register("constitutional")
def run_constitutional_job(config, workdir: str) -> dict:
    return run_constitutional(config, workdir)
