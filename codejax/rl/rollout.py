"""Rollouts: prompts -> sampled completions -> rewards -> one fixed-shape training batch.

Layout of a rollout batch (N = prompts x group_size rows). Each row is the prompt
left-padded to P tokens, then the completion, right-padded to T = max_new_tokens:

    full   = [pad .. pad, prompt (<= P) | completion (<= T), pad ..]       [N, P + T]
    inputs = full[:, :-1], targets = full[:, 1:]                            [N, P + T - 1]

so completion token t is target position P - 1 + t in every row, and every per-token
quantity (log-probs, advantages, values, the mask) lives in a [N, T] *completion view*
whose valid tokens are a prefix of each row: what GAE and the loss aggregations expect.
Positions count real tokens only and padding has segment id 0, exactly as in the sampler,
so the training forward pass computes the numbers the sampler did
(codejax.objectives.policy.completion_view reads the completion view out of a row quantity).
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

import numpy as np

from codejax.rl.rewards import as_array, bind_settings, combine_rewards, get_reward, import_reward_modules

log = logging.getLogger(__name__)

def rollout_batch(prompt_ids: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], prompt_len: int,
                  max_new_tokens: int, pad_id: int,
                  sampled_mask: Sequence[Sequence[int]] | None = None) -> dict[str, np.ndarray]:
    """The training rows of N (prompt, completion) pairs; see the module docstring.

    Prompts longer than `prompt_len` keep their last `prompt_len` tokens (the sampler saw them
    whole, so log-probs may then differ slightly; the job sizes P to the longest prompt).
    Multi-turn episodes pass `sampled_mask` (1 = the policy's token): the tool replies stay in the
    rows (the policy reads them) but get mask 0, and "valid" marks every episode token (PPO's GAE
    runs over it; the loop drops it before the update).
    """
    n, width = len(completions), prompt_len + max_new_tokens
    full = np.full((n, width), pad_id, np.int32)
    valid = np.zeros((n, width), bool)
    mask = np.zeros((n, max_new_tokens), np.float32)
    for i, (p, c) in enumerate(zip(prompt_ids, completions)):
        p, c = list(p)[-prompt_len:], list(c)[:max_new_tokens]
        full[i, prompt_len - len(p):prompt_len] = p
        full[i, prompt_len:prompt_len + len(c)] = c
        valid[i, prompt_len - len(p):prompt_len + len(c)] = True
        mask[i, :len(c)] = 1.0
    positions = np.maximum(np.cumsum(valid, axis=1) - 1, 0).astype(np.int32)
    out = {"inputs": full[:, :-1], "targets": full[:, 1:], "positions": positions[:, :-1],
           "segment_ids": valid[:, :-1].astype(np.int32), "mask": mask}
    if sampled_mask is not None:
        out["valid"] = mask.copy()
        out["mask"] = mask * sampler_logprobs(sampled_mask, max_new_tokens)  # same [N, T] layout
    return out


def sampler_logprobs(logprobs: Sequence[Sequence[float]], max_new_tokens: int) -> np.ndarray:
    """[N, T] the sampler's log-prob of each completion token (0 past the end), in rollout_batch's layout."""
    out = np.zeros((len(logprobs), max_new_tokens), np.float32)
    for i, lp in enumerate(logprobs):
        lp = list(lp)[:max_new_tokens]
        out[i, :len(lp)] = lp
    return out


# ----------------------------------------------------------------------------------- rewards

@dataclasses.dataclass
class RewardSpec:
    """Named reward functions with weights, how they combine, and the missing-EOS penalty.

    `chat` says what a completion is. In completion mode (False) the policy continues the prompt,
    so the program is prompt + completion: a row without a `code_prefix` gets the prompt as its
    code_prefix (without it the code rewards ran the completion alone, which rarely even parses).
    In chat mode the code rewards read the answer's fenced block instead (their `chat` setting).
    """

    fns: dict[str, Callable]
    weights: dict[str, float]
    ensemble: str = "sum"
    missing_eos_penalty: float = 0.0
    chat: bool = False

    @classmethod
    def from_config(cls, rc, extra: dict[str, Callable] | None = None) -> "RewardSpec":
        """The registered rewards named in rl.rewards (after importing rl.reward_modules), with rl's
        sandbox settings and rl.chat bound to those taking them."""
        # .get: a hand-built rl section (tests, notebooks) may lack the newer fields.
        chat = bool(rc.get("chat", False) or rc.get("env", ""))  # an environment's episodes are chats
        import_reward_modules(rc.get("reward_modules", ""))
        names = [n.strip() for n in rc.rewards.split(",") if n.strip()]
        weights = [float(w) for w in rc.reward_weights.split(",") if w.strip()] or [1.0] * len(names)
        if len(weights) != len(names):
            raise ValueError(f"rl.reward_weights has {len(weights)} values for {len(names)} rl.rewards ({names})")
        settings = {"workers": rc.sandbox_workers or None, "default_timeout_s": rc.sandbox_timeout_s, "chat": chat}
        fns = {name: bind_settings(get_reward(name), **settings) for name in names}
        weights = dict(zip(names, weights))
        for name, fn in (extra or {}).items():
            fns[name], weights[name] = fn, 1.0
        if not fns and not rc.get("env", ""):
            raise ValueError("no rewards: set rl.rewards (e.g. 'unit_tests') and/or rl.reward_model")
        return cls(fns, weights, rc.ensemble, rc.missing_eos_penalty, chat)

    def reward_columns(self, prompts: list[str], columns: dict[str, list]) -> dict[str, list]:
        """The columns the functions receive: in completion mode code_prefix defaults to the prompt, per row."""
        if self.chat:
            return columns
        prefixes = columns.get("code_prefix") or [None] * len(prompts)
        return {**columns, "code_prefix": [p if c is None else c for p, c in zip(prompts, prefixes)]}

    def __call__(self, prompts: list[str], completions: list[str], columns: dict[str, list],
                 finish_reasons: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(total [N], {name: raw [N]}) with NaN where a function said None."""
        columns = self.reward_columns(prompts, columns)
        parts = {name: as_array(fn(prompts, completions, **columns)) for name, fn in self.fns.items()}
        total = combine_rewards(parts, self.weights, mode=self.ensemble)
        truncated = np.asarray([r == "length" for r in finish_reasons])
        return total - self.missing_eos_penalty * truncated, parts
