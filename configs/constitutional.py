"""Constitutional AI for code assistants: critique and revise a policy's replies (job `constitutional`).

    python -m codejax.main --config configs/constitutional.py:tiny --workdir runs/cai_tiny   # nothing else needed
    python -m codejax.main --config configs/constitutional.py --workdir runs/cai \
        --config.cai.policy_path=runs/sft                      # the model to align; the scripted critic
    python -m codejax.main --config configs/constitutional.py --workdir runs/cai_teacher \
        --config.cai.policy_path=runs/sft --config.cai.critic=teacher --config.synth.backend=http \
        --config.synth.url=http://127.0.0.1:8000/v1 --config.synth.http_model=teacher   # key: $OPENAI_API_KEY

Variants: '' (a real policy: bfloat16, 512 new tokens), 'tiny' (a random tiny model and the
scripted critic, under a minute on a CPU: every builder, check and output, with replies that are
noise and revisions that come from the rules). Train on the outputs with configs/sft.py
(data.format=chat, data.train_paths='WORKDIR/sft-*.jsonl') and configs/dpo.py
(data.train_paths='WORKDIR/preference-*.jsonl').
"""
from codejax.config import apply_variants, base_config

VARIANTS = ["", "tiny"]


def get_config(arg=None):
    c = base_config()
    c.job = "constitutional"
    c.model.dtype = "bfloat16"
    c.cai.max_new_tokens = 512
    return apply_variants(c, arg, __file__, tiny=_tiny)


def _tiny(c):
    c.model.preset = "tiny"
    c.model.dtype = "float32"
    c.tokenizer.path = c.tokenizer.path or "builtin"
    c.cai.max_new_tokens = 32
    c.cai.batch_size = 16
    c.cai.items_per_builder = 8
    c.cai.principles_per_round = 0  # every principle every round: the scripted critic costs next to nothing
