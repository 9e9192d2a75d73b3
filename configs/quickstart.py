"""The main job: stdlib corpus -> tokenizer -> pretrain -> SFT -> DPO -> GRPO -> pass@k -> report.

    python -m codejax.main --config configs/quickstart.py --workdir /tmp/quickstart
    # fine-tune a local HF model instead of pretraining one:
    python -m codejax.main --config configs/quickstart.py --workdir /tmp/qs \
        --config.model.hf_path=/models/qwen2.5-coder-0.5b

Needs no external data: everything comes from the local Python standard library.
Variants: '' (about 10 minutes on 2 CPU cores), 'tiny' (a smoke run, under a minute).
"""
from codejax.config import apply_variants, base_config

VARIANTS = ["", "tiny"]


def get_config(arg=None):
    c = base_config()
    c.job = "quickstart"
    c.model.family = "llama"
    # Sized for the 10-minute budget on 2 CPU cores: ~12 MFLOP per trained token.
    c.model.hidden_size = 192
    c.model.intermediate_size = 512
    c.model.num_layers = 3
    c.model.num_heads = 4
    c.model.num_kv_heads = 2
    c.data.seq_len = 256
    c.data.batch_size = 16
    c.optim.warmup_steps = 20
    c.optim.weight_decay = 0.01
    c.train.log_every = 10
    c.train.eval_every = 50
    c.train.eval_batches = 20
    c.train.checkpoint_every = 50
    c.train.eval_at_start = True
    c.quickstart.pretrain_steps = 170
    c.quickstart.sft_steps = 130
    return apply_variants(c, arg, __file__, tiny=_tiny)


def _tiny(c):
    c.model.hidden_size = 64
    c.model.intermediate_size = 128
    c.model.num_layers = 2
    c.data.seq_len = 128
    c.data.batch_size = 8
    c.quickstart.sft_seq_len = 384
    c.quickstart.sft_batch_size = 8
    c.optim.warmup_steps = 2
    c.train.log_every = 2
    c.train.eval_every = 0
    c.train.eval_batches = 4
    c.train.checkpoint_every = 5
    q = c.quickstart
    q.corpus_max_files, q.sft_max_files, q.vocab_size = 40, 40, 1024
    q.pretrain_steps, q.sft_steps = 10, 10
    q.eval_fraction = 0.1
    q.task_sft_rows, q.task_pairs = 64, 64
    q.dpo_steps, q.grpo_steps = 4, 2
    q.grpo_prompts_per_step, q.grpo_group_size = 4, 4
    q.eval_samples, q.eval_k = 2, "1,2"
