"""What a parameter-efficient method changes, as one frozen (hashable) dataclass.

`PeftSpec` is a `Transformer` attribute: the model reads it to decide which
projections grow adapters and where prefixes, soft prompts or bottleneck
adapters go. Each method keeps its trainable variables in its own Flax
collection next to the frozen base in 'params':

    method   collection  variables
    lora     lora        lora_a [*in, r], lora_b [r, *out]       (per targeted projection)
    qlora    lora        as lora; the base kernels are stored as NF4 (see nf4.py)
    dora     lora        as lora, plus lora_magnitude [*out]
    prefix   prefix      prefix_kv [layers, 2, P, kv_heads, head_dim], or an embedding + MLP
    prompt   prompt      embedding [P, embed]
    adapter  adapter     attn_adapter / mlp_adapter: down, up (+ biases) per layer
    ia3      ia3         ia3_scale [*out], or [*in] on feed-forward modules

Applying the model with the collection switches the method on; leaving the
collection out gives the base model (the DPO reference, with no second copy).
"""
from __future__ import annotations

import dataclasses
import re

METHODS = ("none", "lora", "qlora", "dora", "prefix", "prompt", "adapter", "ia3")
COLLECTIONS = {"lora": "lora", "qlora": "lora", "dora": "lora", "prefix": "prefix", "prompt": "prompt",
               "adapter": "adapter", "ia3": "ia3"}
PROMPT_INITS = ("random", "vocab", "text")

# Every projection a decoder layer can have, and the shortcut that selects them all (as in HF PEFT,
# 'all-linear' leaves out the output head).
LAYER_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                     "c_fc", "c_proj")
ALL_LINEAR = "all-linear"
# Modules whose *input* (IA)3 scales: the feed-forward output projections, as in the (IA)3 paper.
FEEDFORWARD_OUT = ("down_proj", "c_proj")


@dataclasses.dataclass(frozen=True)
class PeftSpec:
    method: str = "none"
    # LoRA / QLoRA / DoRA
    rank: int = 8
    alpha: float = 16.0
    rslora: bool = False  # scale alpha / sqrt(rank) instead of alpha / rank
    dropout: float = 0.0  # on the adapter's input; active when the apply call gets a 'dropout' rng
    # Names (matched against the module name, e.g. 'q_proj'), 'all-linear', or one regex
    # (prefixed 're:') matched against the dotted module path, e.g. 're:.*self_attn\.(q|v)_proj'.
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    # Prefix and prompt tuning
    num_virtual_tokens: int = 20
    prefix_projection: bool = False  # reparameterise prefixes through an MLP (Li & Liang)
    prefix_hidden_size: int = 512
    prompt_init: str = "random"  # random | vocab (random vocabulary rows) | text (prompt_init_ids)
    prompt_init_ids: tuple[int, ...] = ()
    init_std: float = 0.02  # normal init of prefixes and random soft prompts
    # Adapter layers (Houlsby)
    adapter_size: int = 64
    adapter_activation: str = "gelu"
    # (IA)3: output scaling on targets, input scaling on feed-forward modules
    ia3_target_modules: tuple[str, ...] = ("k_proj", "v_proj", "down_proj", "c_proj")
    ia3_feedforward_modules: tuple[str, ...] = FEEDFORWARD_OUT

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"peft.method={self.method!r}; expected one of {METHODS}")
        if self.rank < 1:
            raise ValueError(f"peft.rank={self.rank}; must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"peft.dropout={self.dropout}; must be in [0, 1)")
        if self.method in ("prefix", "prompt") and self.num_virtual_tokens < 1:
            raise ValueError(f"peft.num_virtual_tokens={self.num_virtual_tokens}; must be >= 1")
        if self.prompt_init not in PROMPT_INITS:
            raise ValueError(f"peft.prompt_init={self.prompt_init!r}; expected one of {PROMPT_INITS}")
        if self.method == "prompt" and self.prompt_init == "text" and not self.prompt_init_ids:
            raise ValueError("peft.prompt_init='text' needs peft.prompt_init_text (tokenized into prompt_init_ids)")
        if self.adapter_activation not in ("gelu", "relu", "silu", "tanh"):
            raise ValueError(f"peft.adapter_activation={self.adapter_activation!r}; "
                             "expected gelu, relu, silu or tanh")
        for pattern in self.target_modules:
            if pattern.startswith("re:"):
                try:
                    re.compile(pattern[3:])
                except re.error as e:
                    raise ValueError(f"peft.target_modules regex {pattern[3:]!r}: {e}") from None

    @property
    def collection(self) -> str | None:
        """The Flax collection holding this method's trainable variables (None for 'none')."""
        return COLLECTIONS.get(self.method)

    @property
    def is_lora(self) -> bool:
        return self.method in ("lora", "qlora", "dora")

    @property
    def scale(self) -> float:
        return self.alpha / (self.rank ** 0.5 if self.rslora else self.rank)

    def targets(self, name: str, path: tuple[str, ...]) -> bool:
        """Does LoRA/DoRA adapt the projection `name` at module path `path`?"""
        return self.is_lora and _matches(self.target_modules, name, path)

    def ia3_mode(self, name: str, path: tuple[str, ...]) -> str | None:
        """'in' or 'out' when (IA)3 scales this projection's input or output, else None."""
        if self.method != "ia3" or not _matches(self.ia3_target_modules, name, path):
            return None
        return "in" if _matches(self.ia3_feedforward_modules, name, path) else "out"


def _matches(patterns: tuple[str, ...], name: str, path: tuple[str, ...]) -> bool:
    dotted = ".".join(path)
    for pattern in patterns:
        if pattern == ALL_LINEAR:
            if name in LAYER_PROJECTIONS:
                return True
        elif pattern.startswith("re:"):
            if re.fullmatch(pattern[3:], dotted):
                return True
        elif pattern == name:
            return True
    return False


def split_names(value: str) -> tuple[str, ...]:
    """'q_proj, v_proj' -> ('q_proj', 'v_proj'); a 're:' regex stays whole (it may contain commas)."""
    value = value.strip()
    if value.startswith("re:"):
        return (value,)
    return tuple(part.strip() for part in value.split(",") if part.strip())


def spec_from_config(pc, tokenizer=None) -> PeftSpec:
    """`config.peft` -> PeftSpec; the tokenizer turns prompt_init_text into ids."""
    ids: tuple[int, ...] = ()
    if pc.method == "prompt" and pc.prompt_init == "text":
        if not pc.prompt_init_text:
            raise ValueError("peft.prompt_init='text' needs peft.prompt_init_text")
        if tokenizer is None:
            raise ValueError("peft.prompt_init='text' needs a tokenizer")
        ids = tuple(tokenizer(pc.prompt_init_text, add_special_tokens=False)["input_ids"])
    return PeftSpec(
        method=pc.method, rank=pc.rank, alpha=pc.alpha, rslora=pc.rslora, dropout=pc.dropout,
        target_modules=split_names(pc.target_modules), num_virtual_tokens=pc.num_virtual_tokens,
        prefix_projection=pc.prefix_projection, prefix_hidden_size=pc.prefix_hidden_size,
        prompt_init=pc.prompt_init, prompt_init_ids=ids, init_std=pc.init_std,
        adapter_size=pc.adapter_size, adapter_activation=pc.adapter_activation,
        ia3_target_modules=split_names(pc.ia3_target_modules),
        ia3_feedforward_modules=split_names(pc.ia3_feedforward_modules))
