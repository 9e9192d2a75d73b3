"""Parameter and FLOP counts from a ModelConfig alone (no arrays), for MFU and sizing.

FLOPs follow the convention of the PaLM paper (appendix B), used by most MFU
reports: a matmul with an [m, k] x [k, n] product costs 2*m*k*n, and

    forward FLOPs/token  = 2 * N_matmul + 4 * L * T_ctx * n_heads * head_dim
    training FLOPs/token = 3 * forward   (backward costs twice the forward)

N_matmul counts every weight used in a matmul, the output projection included
(also when tied to the embedding), but not the embedding lookup, norms or
biases. The attention term is QK^T plus AV over T_ctx keys; with causal=True
T_ctx is halved (each query sees on average half the sequence), which is what
the hardware actually computes with a causal kernel. Sliding windows cap T_ctx.
"""
from __future__ import annotations

from codejax.models.config import ModelConfig


def param_counts(cfg: ModelConfig) -> dict[str, int]:
    """Parameter counts by part: embed, attention, mlp, norms, lm_head, total, matmul."""
    d, hd = cfg.hidden_size, cfg.head_dim
    q, kv = cfg.num_heads * hd, cfg.num_kv_heads * hd
    attn = d * q + 2 * d * kv + q * d
    if cfg.qkv_bias:
        attn += q + 2 * kv
    if cfg.o_bias:
        attn += d
    n_mlp_in = 2 if cfg.mlp == "glu" else 1
    mlp = (n_mlp_in + 1) * d * cfg.intermediate_size
    if cfg.mlp_bias:
        mlp += n_mlp_in * cfg.intermediate_size + d
    norm_size = d * (2 if cfg.norm == "layer" else 1)
    layer_norms = 2 * norm_size + (2 * hd if cfg.qk_norm else 0)
    embed = cfg.vocab_size * d
    lm_head = 0 if cfg.tie_embeddings else cfg.vocab_size * d
    attn_matmul = d * q + 2 * d * kv + q * d
    mlp_matmul = (n_mlp_in + 1) * d * cfg.intermediate_size
    counts = dict(
        embed=embed,
        attention=cfg.num_layers * attn,
        mlp=cfg.num_layers * mlp,
        norms=cfg.num_layers * layer_norms + norm_size,
        lm_head=lm_head,
        # Weights that take part in a matmul (the output projection counts even when tied).
        matmul=cfg.num_layers * (attn_matmul + mlp_matmul) + cfg.vocab_size * d,
    )
    counts["total"] = embed + counts["attention"] + counts["mlp"] + counts["norms"] + lm_head
    counts["non_embedding"] = counts["total"] - embed - lm_head
    return counts


def flops_per_token(cfg: ModelConfig, seq_len: int, *, training: bool = True,
                    causal: bool = False) -> float:
    """Model FLOPs per token at sequence length `seq_len` (see the module docstring)."""
    ctx_per_layer = []
    for window in cfg.layer_windows():
        ctx = seq_len / 2 if causal else seq_len
        if window is not None:
            ctx = min(ctx, window)
        ctx_per_layer.append(ctx)
    attention = sum(4 * ctx * cfg.num_heads * cfg.head_dim for ctx in ctx_per_layer)
    forward = 2 * param_counts(cfg)["matmul"] + attention
    return 3 * forward if training else forward
