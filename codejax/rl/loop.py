"""The on-policy RL loop shared by every registered algorithm (GRPO, RLOO, PPO): sample, score, update.

One RL step:
1. take `prompts_per_step` prompts (a seeded, checkpointed pass over the prompt set);
2. sample `group_size` completions each with the current policy (codejax.generate);
3. reward them (RewardSpec: registered functions, a reward model, an ensemble; missing-EOS penalty);
4. one no-grad pass for the rollout's log-probs (the algorithm's `score`: PPO adds values) and,
   with a KL term, the reference's;
5. the algorithm's advantages (group-normalised, leave-one-out, or GAE with the KL penalty);
6. `epochs` passes of `minibatches` optimizer steps over the rollouts (the training core's
   jitted train step, with accumulation and sharding).

Everything around the steps (workdir, resume, checkpoints with the prompt iterator and KL
coefficient, SIGTERM, non-finite checks, early stopping on eval/reward, the summary) is the
run scaffold's (codejax/train/run.py). Held-out prompts are scored greedily every
`train.eval_every` steps (eval/reward, the usual best-checkpoint metric).

With `rl.overlap` the rollouts of step k+1 are generated and rewarded in a background thread
while step k updates (one-step off-policy, as AReaL / verl's one-step-off async). Those
rollouts come from the weights before step k's update; the score pass computes old_logp under
the updated weights, and truncated importance sampling (rl.tis_cap, 2.0 when left at 0)
corrects the gap to the sampler. The prompt stream is checkpointed as consumed, so a resumed
run trains on the same prompts, but its first step's rollouts are on-policy (the pre-update
weights are not saved): resume is exact without overlap only. Every step logs the split
train/time/{generation,reward,score,update,wait}_s.

With `rl.env` a step's rollouts are multi-turn episodes (`sample_episodes`): an environment
(codejax/rl/tool_envs.py) answers each assistant turn, the sampler feeds its reply back
(codejax.generate.turns), the replies are masked out of the loss, and the episode's reward is the
environment's plus rl.rewards on the final answer; train/tool_calls, train/turns and
train/time/tool_s are logged beside the rest.

Every logged step also appends `rl.log_completions` of its completions, with their rewards,
to WORKDIR/completions.jsonl (TRL's log_completions), and a policy that stops learning (every
group's rewards equal, or a zero gradient, STALL_STEPS steps in a row) gets a warning saying
what to change.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import math
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from codejax.evaluation.sampling import eos_ids
from codejax.generate import SamplingParams, generate, generate_turns
from codejax.losses import KL_ESTIMATORS, LOSS_AGGS, SCALE_REWARDS, AdaptiveKLController, FixedKLController
from codejax.objectives.policy import add_sampler_logprobs, add_token_share, completion_logprobs
from codejax.objectives.variables import ModelVariables, combine, policy_view, reference_view
from codejax.parallel import Parallel
from codejax.rl.algorithms import get_algorithm
from codejax.rl.rollout import RewardSpec, rollout_batch, sampler_logprobs
from codejax.rl.tool_envs import make_env
from codejax.train.optim import make_optimizer
from codejax.train.run import Run
from codejax.train.step import make_train_step
from codejax.train.workdir import read_jsonl, write_text

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RLInputs:
    """What an RL job hands `run_rl`."""

    algorithm: str  # a registered codejax.rl.algorithms name
    model: Any
    tokenizer: Any
    variables: ModelVariables  # the policy (+ the algorithm's extra collections), a frozen base or reference
    rewards: RewardSpec
    train_prompts: list[dict]  # rows with "prompt_ids", "prompt" (text) and reward columns
    eval_prompts: list[dict]
    parallel: Parallel | None = None


class PromptIterator:
    """Seeded epochs over prompt indices; its state (epoch, position) goes in the checkpoint."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch, self.pos = n, seed, 0, 0

    def peek(self, k: int) -> list[int]:
        """The indices `take(k)` will return, without advancing."""
        state = self.get_state()
        out = self.take(k)
        self.set_state(state)
        return out

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            take = min(k - len(out), self.n - self.pos)
            out.extend(order[self.pos:self.pos + take].tolist())
            self.pos += take
            if self.pos == self.n:
                self.epoch, self.pos = self.epoch + 1, 0
        return out

    def get_state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "n": self.n}

    def set_state(self, state: dict) -> None:
        if state.get("n") != self.n:
            raise ValueError(f"checkpointed prompt iterator covered {state.get('n')} prompts, this run has {self.n}")
        self.epoch, self.pos = state["epoch"], state["pos"]


class _LoopState:
    """The checkpoint's data item: the prompt order and the KL coefficient."""

    def __init__(self, prompts: PromptIterator, kl):
        self.prompts, self.kl = prompts, kl

    def get_state(self) -> dict:
        return {"prompts": self.prompts.get_state(), "kl": self.kl.state_dict()}

    def set_state(self, state: dict) -> None:
        self.prompts.set_state(state["prompts"])
        self.kl.load_state_dict(state["kl"])


def _columns(rows: list[dict], repeat: int) -> dict[str, list]:
    skip = {"prompt", "prompt_ids"}
    keys = sorted({k for r in rows for k in r} - skip)
    return {k: [r.get(k) for r in rows for _ in range(repeat)] for k in keys}


@dataclasses.dataclass
class Rollouts:
    rows: list[dict]
    samples: Any  # codejax.generate's output (Episodes with rl.env)
    total: np.ndarray  # [N] combined rewards
    parts: dict  # {reward name: [N]}
    seconds: dict  # {"generation_s", "reward_s"} (+ "tool_s" with rl.env)
    episode: dict = dataclasses.field(default_factory=dict)  # {"tool_calls", "tool_errors"}: [N] per episode


def sample_and_score(inputs: RLInputs, variables: dict, rows: list[dict], params: SamplingParams,
                     rc=None) -> Rollouts:
    """Samples for `rows` and their rewards, timed; episodes in environment `rc.env` when set."""
    if rc is not None and rc.env:
        return sample_episodes(inputs, variables, rows, params, rc)
    t0 = time.perf_counter()
    samples = generate(inputs.model, policy_view(variables), inputs.tokenizer, [r["prompt_ids"] for r in rows], params)
    t1 = time.perf_counter()
    prompts = [rows[i]["prompt"] for i in samples.prompt_index]
    total, parts = inputs.rewards(prompts, samples.texts, _columns(rows, params.n), samples.finish_reasons)
    return Rollouts(rows, samples, total, parts, {"generation_s": t1 - t0, "reward_s": time.perf_counter() - t1})


def sample_episodes(inputs: RLInputs, variables: dict, rows: list[dict], params: SamplingParams, rc) -> Rollouts:
    """Multi-turn episodes in environment rc.env (codejax/rl/tool_envs.py), one instance per episode.
    The reward is the sum of the environment's per-turn rewards ("env") plus rl.rewards on the final answer."""
    n_episodes = len(rows) * params.n
    envs = [make_env(rc.env, rows[i // params.n], timeout_s=rc.tool_timeout_s,
                     max_output_chars=rc.max_tool_output_chars) for i in range(n_episodes)]
    for i, env in enumerate(envs):
        env.reset(rows[i // params.n])
    env_reward = np.zeros(n_episodes)
    tool_s = [0.0]
    workers = rc.sandbox_workers or os.cpu_count() or 1

    def respond(idx: list[int], texts: list[str], last: list[bool]) -> list[str | None]:
        t = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(min(workers, len(idx)), "rl-tools") as pool:
            steps = list(pool.map(lambda a: envs[a[0]].step(a[1]), zip(idx, texts)))
        for i, (_, reward, _) in zip(idx, steps):
            env_reward[i] += reward
        tool_s[0] += time.perf_counter() - t
        return [None if done else obs for obs, _, done in steps]

    t0 = time.perf_counter()
    samples = generate_turns(inputs.model, policy_view(variables), inputs.tokenizer, [r["prompt_ids"] for r in rows],
                             params, respond, max_turns=rc.max_turns, max_reply_tokens=rc.max_reply_tokens)
    t1 = time.perf_counter()
    total, parts = env_reward.copy(), {"env": env_reward}
    if inputs.rewards.fns:
        prompts = [rows[i]["prompt"] for i in samples.prompt_index]
        answer_total, answer_parts = inputs.rewards(prompts, samples.texts, _columns(rows, params.n),
                                                    samples.finish_reasons)
        total, parts = total + answer_total, {**parts, **answer_parts}
    episode = {"tool_calls": np.asarray([e.tool_calls for e in envs], float),
               "tool_errors": np.asarray([e.tool_errors for e in envs], float)}
    return Rollouts(rows, samples, total, parts, {"generation_s": t1 - t0 - tool_s[0], "tool_s": tool_s[0],
                                                  "reward_s": time.perf_counter() - t1}, episode)


def reward_metrics(prefix: str, r: Rollouts) -> dict[str, float]:
    total, samples = r.total, r.samples
    lengths = np.asarray([len(t) for t in samples.tokens])
    out = {f"{prefix}/reward": float(np.nanmean(total)) if np.isfinite(total).any() else float("nan"),
           f"{prefix}/completion_length": float(lengths.mean()),
           f"{prefix}/truncated_fraction": float(np.mean([f == "length" for f in samples.finish_reasons]))}
    for name, values in r.parts.items():
        if np.isfinite(values).any():
            out[f"{prefix}/rewards/{name}"] = float(np.nanmean(values))
    if r.episode:  # multi-turn: per-episode means
        out[f"{prefix}/turns"] = float(np.mean([len(t) for t in samples.turns]))
        out.update({f"{prefix}/{k}": float(v.mean()) for k, v in r.episode.items()})
    return out


# ----------------------------------------------------------------------------- watching the run

COMPLETIONS_FILE = "completions.jsonl"
STALL_STEPS = 5  # steps in a row a STALLS condition must hold before the warning

# (metric, stalled(value), why and what to change): each means the updates change nothing.
STALLS: tuple[tuple[str, Callable[[float], bool], str], ...] = (
    ("train/zero_spread_fraction", lambda v: v >= 1.0,
     "every group's completions got the same reward, so every advantage is 0. Check that the rewards can "
     "score these completions (WORKDIR/completions.jsonl; rl.chat, a code_prefix column, rl.rewards), give "
     "partial credit (a graded reward), raise rl.group_size or rl.temperature, or warm-start with SFT"),
    ("train/grad_norm", lambda v: v == 0.0,
     "the updates are 0: every advantage is 0 (see train/zero_spread_fraction and the rewards in "
     "WORKDIR/completions.jsonl) or every completion token is masked (rl.mask_truncated with "
     "train/truncated_fraction at 1: raise rl.max_new_tokens or set rl.stop)"),
)


class StallWatch:
    """Counts the steps in a row each STALLS condition has held; warns once per streak."""

    def __init__(self, steps: int = STALL_STEPS):
        self.steps, self.streaks = steps, {key: 0 for key, _, _ in STALLS}

    def update(self, step: int, metrics: dict[str, float]) -> list[str]:
        """Count this step's metrics; returns the metrics warned about now (a streak reaching `steps`)."""
        warned = []
        for key, stalled, advice in STALLS:
            value = metrics.get(key)
            self.streaks[key] = self.streaks[key] + 1 if value is not None and stalled(value) else 0
            if self.streaks[key] == self.steps:
                log.warning("%s has been %g for %d steps in a row (steps %d-%d): the policy learns nothing; %s",
                            key, value, self.steps, step - self.steps + 1, step, advice)
                warned.append(key)
        return warned


def _json_number(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None  # NaN (a reward said "not applicable") -> null


def completion_rows(step: int, prompts: list[str], completions: list[str], total: np.ndarray,
                    parts: dict[str, np.ndarray], k: int) -> list[dict]:
    """`k` of a step's completions, spread over its prompts, as {step, prompt, completion, reward, rewards}."""
    n = len(completions)
    if k <= 0 or n == 0:
        return []
    picked = range(0, n, max(1, n // k))[:k]  # the first of every (n // k)-th: different prompts first
    return [{"step": int(step), "prompt": prompts[i], "completion": completions[i], "reward": _json_number(total[i]),
             "rewards": {name: _json_number(values[i]) for name, values in parts.items()}} for i in picked]


class CompletionLog:
    """WORKDIR/completions.jsonl, append-only (process 0 only). Opening it drops the rows after
    `start_step`: a resumed run logs those steps again, so they would otherwise appear twice."""

    def __init__(self, workdir: str, start_step: int):
        self.path = os.path.join(workdir, COMPLETIONS_FILE)
        if os.path.exists(self.path):
            kept = [r for r in read_jsonl(self.path)
                    if isinstance(r, dict) and isinstance(r.get("step"), int) and r["step"] <= start_step]
            write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def write(self, rows: list[dict]) -> None:
        if rows:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write("".join(json.dumps(r) + "\n" for r in rows))


def check_rl_config(config, algorithm, par: Parallel | None) -> int:
    """Fail before any work on batch shapes that cannot work; returns the minibatch size."""
    rc = config.rl
    for field, allowed in (("loss_agg", LOSS_AGGS), ("scale_rewards", SCALE_REWARDS), ("kl_estimator", KL_ESTIMATORS)):
        if rc[field] not in allowed:
            raise ValueError(f"rl.{field}={rc[field]!r}; expected one of {', '.join(allowed)}")
    if rc.env:
        make_env(rc.env, {})  # a registered name (after rl.reward_modules), or the error listing them
        if rc.max_turns < 1 or rc.max_reply_tokens < 1:
            raise ValueError(f"rl.max_turns={rc.max_turns} and rl.max_reply_tokens={rc.max_reply_tokens} must be >= 1")
        if rc.stop:
            raise ValueError(f"rl.stop={rc.stop!r} with rl.env={rc.env!r}: an episode's turns end at the end-of-turn "
                             "token; set rl.stop=''")
    n_rollouts = rc.prompts_per_step * rc.group_size
    if rc.tis_cap < 0 or 0 < rc.tis_cap < 1:
        raise ValueError(f"rl.tis_cap={rc.tis_cap}: the importance-weight cap must be >= 1 (TRL's default 2.0), or 0 = off")
    if rc.minibatches < 1 or n_rollouts % rc.minibatches:
        raise ValueError(f"rl.prompts_per_step x rl.group_size = {n_rollouts} rollouts do not split into "
                         f"rl.minibatches={rc.minibatches}")
    if algorithm.group_baseline and rc.group_size < 2:
        raise ValueError(f"{algorithm.name} compares completions within a group: rl.group_size must be >= 2")
    mb_size = n_rollouts // rc.minibatches
    if par is not None:
        devices = par.mesh.shape["data"] * par.mesh.shape["fsdp"]
        if mb_size % (devices * config.optim.grad_accum_steps):
            raise ValueError(f"minibatches of {mb_size} rollouts (prompts_per_step x group_size / minibatches) must "
                             f"split over {devices} data x fsdp devices x optim.grad_accum_steps="
                             f"{config.optim.grad_accum_steps}")
    return mb_size


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "|": "|"}


def parse_stop(text: str) -> tuple[str, ...]:
    r"""rl.stop: '|'-separated stop strings, backslash escapes read (a shell passes
    `--config.rl.stop='\n\n|\ndef '` as backslashes): \n newline, \t tab, \r, \\ a backslash and
    \| a literal '|'. Any other backslash is an error naming the field."""
    out, current, chars = [], [], iter(enumerate(text))
    for i, ch in chars:
        if ch == "|":
            out.append("".join(current))
            current = []
        elif ch == "\\":
            nxt = next(chars, (None, ""))[1]
            if nxt not in _ESCAPES:
                raise ValueError(f"rl.stop={text!r}: unknown escape '\\{nxt}' at character {i}; use \\n, \\t, \\r, "
                                 "\\\\ or \\| (a literal '|')")
            current.append(_ESCAPES[nxt])
        else:
            current.append(ch)
    out.append("".join(current))
    return tuple(s for s in out if s)


def run_rl(config, workdir: str, inputs: RLInputs) -> tuple[dict, dict]:
    """Train the policy in `inputs` for config.train.steps RL steps in `workdir`; returns (summary, final state)."""
    rc, tc, par, model = config.rl, config.train, inputs.parallel, inputs.model
    algorithm = get_algorithm(inputs.algorithm)
    mb_size = check_rl_config(config, algorithm, par)
    n_rollouts = rc.prompts_per_step * rc.group_size
    prompt_len = max(len(r["prompt_ids"]) for r in inputs.train_prompts + inputs.eval_prompts)
    max_new = rc.max_new_tokens
    tok = inputs.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    optimizer, schedule = make_optimizer(config.optim, tc.steps * rc.epochs * rc.minibatches)
    kl = (AdaptiveKLController(rc.kl_coef, rc.kl_target, rc.kl_horizon) if rc.adaptive_kl
          else FixedKLController(rc.kl_coef))
    prompts = PromptIterator(len(inputs.train_prompts), config.seed)
    with Run(config, workdir, inputs.variables, optimizer, _LoopState(prompts, kl), par, desc=algorithm.name) as run:
        if run.finished:
            return run.finished, run.state
        train_step = make_train_step(algorithm.loss_fn(model, rc, prompt_len, max_new), optimizer, schedule,
                                     config.optim.grad_accum_steps, parallel=par,
                                     state_shardings=run.state_shardings, frozen_shardings=run.frozen_shardings)

        @jax.jit
        def score(trainable, frozen, batch):
            """No-grad pass over the rollouts: the algorithm's (old log-probs, values) and the reference's."""
            variables = combine(trainable, frozen)
            out = algorithm.score(model, variables, batch, prompt_len)
            if rc.kl_coef > 0:
                out["ref_logp"] = completion_logprobs(model, reference_view(variables), batch, prompt_len)
            return out

        sampling = SamplingParams(max_new_tokens=max_new, temperature=rc.temperature, top_p=rc.top_p,
                                  top_k=rc.top_k, n=rc.group_size, stop=parse_stop(rc.stop),
                                  # episodes: a turn that ends mid-chunk waits for the chunk's end
                                  chunk_size=16 if rc.env else 32, eos_ids=eos_ids(tok, model, "chat", config.model.hf_path)
                                  if rc.env else None)
        greedy = dataclasses.replace(sampling, temperature=0.0, top_p=1.0, top_k=0, n=1)

        def do_eval(step: int) -> bool:
            if not inputs.eval_prompts:
                return False
            r = sample_and_score(inputs, combine(run.state["params"], run.frozen), inputs.eval_prompts, greedy, rc)
            return run.evaluate(step, reward_metrics("eval", r))

        if tc.eval_at_start and run.start_step == 0:
            do_eval(0)
        completion_log = CompletionLog(workdir, run.start_step) if run.is_main else None
        stalls = StallWatch()
        metrics: dict[str, float] = {}

        def _update(step: int, r: Rollouts, t0: float, t_wait: float) -> tuple[dict, bool]:
            """Score, advantages and the optimizer steps on rollouts `r`; (metrics, whether the run stops)."""
            samples = r.samples
            t_score = time.time()
            batch = rollout_batch([p["prompt_ids"] for p in r.rows for _ in range(rc.group_size)], samples.tokens,
                                  prompt_len, max_new, pad_id, getattr(samples, "sampled_mask", None))
            if rc.mask_truncated:
                batch["mask"][np.asarray([f == "length" for f in samples.finish_reasons])] = 0.0
            batch.update(jax.device_get(score(run.state["params"], run.frozen, batch)))
            metrics = reward_metrics("train", r)
            batch, logprob_metrics = add_sampler_logprobs(batch, sampler_logprobs(samples.logprobs, max_new), tis_cap)
            metrics.update(logprob_metrics)
            advantages, adv_metrics = algorithm.advantages(batch, r.total, rc, kl.value)
            batch.update(advantages)
            batch.pop("valid", None)
            if rc.loss_agg == "dapo":
                batch = add_token_share(batch)
            metrics.update(adv_metrics)

            t_update = time.time()
            rng = np.random.default_rng([config.seed, 7, step])  # per step, so a resumed run shuffles alike
            for _ in range(rc.epochs):
                order = rng.permutation(n_rollouts)
                for m in range(rc.minibatches):
                    idx = order[m * mb_size:(m + 1) * mb_size]
                    run.state, out = train_step(run.state, run.place({k: v[idx] for k, v in batch.items()}),
                                                run.frozen)
            run.step = step
            metrics.update({f"train/{k}": float(v) for k, v in jax.device_get(out).items()})
            if algorithm.adapts_kl:
                kl.update(metrics["train/kl"], n_rollouts)
                metrics["train/kl_coef"] = float(kl.value)
            now = time.time()
            metrics.update({f"train/time/{k}": v for k, v in r.seconds.items()})  # in the background with overlap
            metrics.update({"train/time/wait_s": t_wait, "train/time/score_s": t_update - t_score,
                            "train/time/update_s": now - t_update, "train/time/step_s": now - t0})
            run.check_finite({"loss": metrics["train/loss"], "grad_norm": metrics["train/grad_norm"]}, step)
            stalls.update(step, metrics)
            if step % tc.log_every == 0 or step == tc.steps:
                run.log(step, metrics)
                if completion_log is not None:
                    completion_log.write(completion_rows(step, [r.rows[i]["prompt"] for i in samples.prompt_index],
                                                         getattr(samples, "transcripts", samples.texts), r.total,
                                                         r.parts, rc.log_completions))
            run.progress(reward=f"{metrics['train/reward']:.3f}")
            return metrics, run.end_step(step, {}, do_eval)  # eval when due; early stop, SIGTERM, checkpoint

        def next_rows() -> list[dict]:
            """The next prompts of the stream, not consumed (the main thread alone touches the iterator:
            a checkpoint saves its state)."""
            return [inputs.train_prompts[i] for i in prompts.peek(rc.prompts_per_step)]

        def rollouts(step: int, params, rows: list[dict]) -> Rollouts:
            return sample_and_score(inputs, combine(params, run.frozen), rows,
                                    dataclasses.replace(sampling, seed=config.seed * 1_000_003 + step), rc)

        tis_cap = rc.tis_cap or (2.0 if rc.overlap else 0.0)
        background = concurrent.futures.ThreadPoolExecutor(1, "rl-rollouts") if rc.overlap else None
        pending: concurrent.futures.Future | None = None
        try:
            for step in range(run.start_step + 1, tc.steps + 1):
                t0 = time.time()
                r = pending.result() if pending is not None else rollouts(step, run.state["params"], next_rows())
                prompts.take(rc.prompts_per_step)  # consumed: the checkpoint after this step resumes past them
                t_wait = time.time() - t0
                pending = None
                if background is not None and step < tc.steps:
                    # The next step's rollouts, sampled from a copy of these weights (the update donates them).
                    pending = background.submit(rollouts, step + 1, jax.tree.map(jnp.copy, run.state["params"]),
                                                next_rows())
                metrics, stop = _update(step, r, t0, t_wait)
                if stop:
                    break
        finally:
            if background is not None:
                if pending is not None:
                    pending.cancel()
                background.shutdown(wait=True)  # an in-flight generation finishes before the run closes

        if run.needs_final_eval:
            do_eval(run.step)
        if run.completed:
            run.save_final({})
        summary = run.close({"algorithm": algorithm.name, "last_train": metrics,
                             "prompts": {"train": len(inputs.train_prompts), "eval": len(inputs.eval_prompts)}})
        return summary, run.state
