"""The memory estimate against XLA's compiled memory analysis."""
import jax
import jax.numpy as jnp
import pytest

from codejax.models import Transformer, abstract_params, param_counts, tiny_config
from codejax.objectives.lm import lm_loss_fn
from codejax.parallel import Parallel, make_mesh
from codejax.parallel.memory import activation_bytes, estimate_memory
from codejax.train.step import accumulated_grads

CFG = tiny_config("llama", num_layers=4, hidden_size=256, intermediate_size=512, vocab_size=1024)
ROWS, SEQ = 8, 256


def _xla_temp_bytes(cfg):
    model = Transformer(cfg)
    batch = {k: jax.ShapeDtypeStruct((ROWS, SEQ), jnp.int32) for k in ("inputs", "targets", "segment_ids",
                                                                       "positions")}
    batch["weights"] = jax.ShapeDtypeStruct((ROWS, SEQ), jnp.float32)
    grads = jax.jit(lambda p, b: accumulated_grads(lm_loss_fn(model), {"params": p}, b, jax.random.PRNGKey(0), 1))
    return grads.lower(abstract_params(cfg), batch).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("policy", ["none", "dots", "minimal", "full"])
def test_activation_estimate_is_close_to_xla(policy):
    cfg = CFG.replace(remat_policy=policy)
    estimate, measured = activation_bytes(cfg, ROWS, SEQ), _xla_temp_bytes(cfg)
    assert 0.6 < estimate / measured < 1.5, (policy, estimate, measured)


def test_remat_policies_order_and_state_sharding():
    by_policy = {p: activation_bytes(CFG.replace(remat_policy=p), ROWS, SEQ) for p in ("none", "dots", "full")}
    assert by_policy["none"] > by_policy["dots"] > by_policy["full"]

    n = param_counts(CFG)["total"]
    single = estimate_memory(CFG, Parallel.single_device(), ROWS, SEQ)
    assert single["params"] == single["grads"] == 4 * n and single["optimizer"] == 8 * n
    fsdp = estimate_memory(CFG, Parallel.create(make_mesh(1, 8, 1), "fsdp"), ROWS, SEQ)
    assert fsdp["params"] == single["params"] // 8  # every leaf has an embed dim split 8 ways
    zero1 = estimate_memory(CFG, Parallel.create(make_mesh(8, 1, 1), "zero1"), ROWS, SEQ)
    assert zero1["params"] == single["params"] and zero1["optimizer"] == single["optimizer"] // 8
    assert fsdp["activations"] < single["activations"]  # one row per device instead of eight
