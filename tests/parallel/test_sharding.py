"""Sharded training on 8 fake CPU devices equals the single-device run (tests/conftest.py sets them up)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from codejax.config import base_config
from codejax.models import Transformer, abstract_params, init_params, logical_axes, save_hf, tiny_config
from codejax.models.hf import load_hf_params
from codejax.objectives.lm import lm_loss_fn
from codejax.parallel import Parallel, check_divisible, logical_rules, make_mesh, resolve_axis_sizes
from codejax.train.checkpoint import Checkpointer, abstract_like
from codejax.train.optim import make_optimizer
from codejax.train.step import init_train_state, make_train_step

CFG = tiny_config("llama", num_layers=2)
MESHES = {"dp": (8, 1, 1), "fsdp": (1, 8, 1), "tp": (4, 1, 2), "fsdp_tp": (2, 2, 2), "zero1": (8, 1, 1)}


def test_there_are_eight_devices():
    assert jax.device_count() == 8, "tests/conftest.py must set --xla_force_host_platform_device_count=8"


def _batch(seed, rows=16, length=16):  # 16 rows: 2 micro-batches of 8 still split over 8 devices
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, CFG.vocab_size, size=(rows, length + 1)).astype(np.int32)
    weights = (rng.random((rows, length)) > 0.2).astype(np.float32)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "weights": weights,
            "segment_ids": np.ones((rows, length), np.int32),
            "positions": np.tile(np.arange(length, dtype=np.int32), (rows, 1))}


def _optimizer():
    optim = base_config().optim
    # A large eps keeps Adam's m/(sqrt(v)+eps) proportional to the gradient for near-zero
    # gradients; with eps=1e-8 it is sign(g) there, and the float32 rounding of a sharded
    # reduction (another summation order) could flip a sign and move a weight by 2*lr.
    optim.lr, optim.warmup_steps, optim.eps = 1e-2, 0, 1e-3
    return make_optimizer(optim, total_steps=10)


def _run(par, steps=3, accum=1):
    """Train CFG for `steps` steps, sharded over `par` (or on one device when None)."""
    model = Transformer(CFG)
    optimizer, schedule = _optimizer()
    params = {"params": init_params(CFG, jax.random.PRNGKey(0))}
    if par is None:
        state, shardings = init_train_state(params, optimizer, 0), None
    else:
        shardings = par.state_shardings(optimizer, {"params": abstract_params(CFG)}, {"params": logical_axes(CFG)})
        with par.context():
            state = jax.jit(lambda p: init_train_state(p, optimizer, 0), out_shardings=shardings)(params)
    step = make_train_step(lm_loss_fn(model), optimizer, schedule, accum, parallel=par, state_shardings=shardings)
    losses = []
    for i in range(steps):
        batch = _batch(i)
        state, metrics = step(state, batch if par is None else par.shard_batch(batch))
        losses.append(float(metrics["loss"]))
    return state, losses, shardings


@pytest.fixture(scope="module")
def single_device_run():
    state, losses, _ = _run(None)
    return jax.device_get(state["params"]), losses


@pytest.mark.parametrize("preset", sorted(MESHES))
def test_sharded_training_equals_single_device(preset, single_device_run):
    ref_params, ref_losses = single_device_run
    par = Parallel.create(make_mesh(*MESHES[preset]), preset)
    state, losses, shardings = _run(par, accum=2 if preset == "fsdp" else 1)
    np.testing.assert_allclose(losses, ref_losses, rtol=2e-5)
    for got, want in zip(jax.tree_util.tree_leaves(state["params"]), jax.tree_util.tree_leaves(ref_params)):
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=0)
    # The state really is laid out as the rules say, after the donated update too.
    flat_sh = jax.tree_util.tree_leaves(shardings["params"], is_leaf=lambda x: isinstance(x, NamedSharding))
    for leaf, sharding in zip(jax.tree_util.tree_leaves(state["params"]), flat_sh):
        assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim)


@pytest.mark.parametrize("preset", sorted(MESHES))
def test_every_param_sharding_follows_its_logical_rule(preset):
    par = Parallel.create(make_mesh(*MESHES[preset]), preset)
    axes = logical_axes(CFG)
    shardings = par.param_shardings(axes)
    rules = dict(par.rules[::-1])  # first rule wins, as in flax
    specs = jax.tree_util.tree_leaves(axes, is_leaf=lambda x: isinstance(x, PartitionSpec))
    for names, sharding in zip(specs, jax.tree_util.tree_leaves(
            shardings, is_leaf=lambda x: isinstance(x, NamedSharding))):
        expected = tuple(rules[name] for name in names)
        assert tuple(sharding.spec) + (None,) * (len(names) - len(sharding.spec)) == expected, names


def test_zero1_replicates_params_and_splits_optimizer_state():
    par = Parallel.create(make_mesh(8, 1, 1), "zero1")
    optimizer, _ = _optimizer()
    shardings = par.state_shardings(optimizer, {"params": abstract_params(CFG)}, {"params": logical_axes(CFG)})
    q_param = shardings["params"]["params"]["layers"]["self_attn"]["q_proj"]["kernel"]
    assert all(axis is None for axis in q_param.spec)
    moments = [s for s in jax.tree_util.tree_leaves(shardings["opt_state"], is_leaf=lambda x: isinstance(
        x, NamedSharding)) if any(a is not None for a in s.spec)]
    assert moments and all(("data", "fsdp") in s.spec for s in moments)


@pytest.mark.slow
def test_restore_onto_a_different_mesh_and_continue(tmp_path):
    optimizer, schedule = _optimizer()
    model = Transformer(CFG)
    loss_fn = lm_loss_fn(model)

    def setup(par):
        shardings = par.state_shardings(optimizer, {"params": abstract_params(CFG)}, {"params": logical_axes(CFG)})
        step = make_train_step(loss_fn, optimizer, schedule, parallel=par, state_shardings=shardings)
        return shardings, step

    fsdp8 = Parallel.create(make_mesh(1, 8, 1), "fsdp")
    sh8, step8 = setup(fsdp8)
    with fsdp8.context():
        state = jax.jit(lambda p: init_train_state(p, optimizer, 0), out_shardings=sh8)(
            {"params": init_params(CFG, jax.random.PRNGKey(0))})
    for i in range(2):
        state, _ = step8(state, fsdp8.shard_batch(_batch(i)))
    with Checkpointer(tmp_path, save_every=1, async_save=False) as ckpt:
        ckpt.save(2, state, {"position": 2}, force=True)
    state, metrics = step8(state, fsdp8.shard_batch(_batch(2)))
    expected_loss = float(metrics["loss"])

    # Restore on 4 devices as fsdp=2 x tensor=2 and take the same third step.
    small = Parallel.create(make_mesh(1, 2, 2, devices=jax.devices()[:4]), "fsdp_tp")
    sh4, step4 = setup(small)
    target = abstract_like(jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, sh4))
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        step, restored, data_state, _ = ckpt.restore_latest(target)
    assert step == 2 and data_state == {"position": 2}
    q = restored["params"]["params"]["layers"]["self_attn"]["q_proj"]["kernel"]
    assert q.sharding.mesh.devices.size == 4 and tuple(q.sharding.spec)[:3] == (None, "fsdp", "tensor")
    restored, metrics = step4(restored, small.shard_batch(_batch(2)))
    np.testing.assert_allclose(float(metrics["loss"]), expected_loss, rtol=1e-5)


def test_hf_checkpoint_loads_straight_into_shardings(tmp_path):
    save_hf(tmp_path, CFG, init_params(CFG, jax.random.PRNGKey(1)))
    par = Parallel.create(make_mesh(2, 2, 2), "fsdp_tp")
    shardings = par.param_shardings(logical_axes(CFG))
    by_path = {tuple(k.key for k in p): s for p, s in jax.tree_util.tree_leaves_with_path(
        shardings, is_leaf=lambda x: isinstance(x, NamedSharding))}
    placed = []

    def place(path, array):
        placed.append(path)
        return jax.device_put(array, by_path[path])

    params = load_hf_params(tmp_path, CFG, place=place)
    assert len(placed) == len(by_path)
    kernel = params["layers"]["mlp"]["gate_proj"]["kernel"]
    assert kernel.sharding == by_path[("layers", "mlp", "gate_proj", "kernel")]
    assert kernel.addressable_shards[0].data.shape == (2, 32, 64)  # [layers, embed/2, mlp/2]


def test_rule_overrides_from_the_command_line_form():
    rules = logical_rules("fsdp", "mlp=tensor,embed=data+fsdp,heads=none")
    assert rules[:3] == (("mlp", "tensor"), ("embed", ("data", "fsdp")), ("heads", None))
    assert logical_rules("fsdp", (("mlp", "tensor"),))[0] == ("mlp", "tensor")
    with pytest.raises(ValueError, match="unknown mesh axis 'model'"):
        logical_rules("fsdp", "mlp=model")
    with pytest.raises(ValueError, match="expected logical_name=mesh_axis"):
        logical_rules("fsdp", "mlp")


def test_mesh_sizes_and_clear_errors():
    assert resolve_axis_sizes((-1, 2, 2), 8) == (2, 2, 2)
    with pytest.raises(ValueError, match="at most one"):
        resolve_axis_sizes((-1, -1, 1), 8)
    with pytest.raises(ValueError, match="needs 6 devices"):
        make_mesh(3, 2, 1)
    par = Parallel.create(make_mesh(1, 1, 8), "tp")  # kv_heads=2 cannot split 8 ways
    with pytest.raises(ValueError, match=r"k_proj.*kernel.*size 2"):
        check_divisible(abstract_params(CFG), par.param_shardings(logical_axes(CFG)))
    with pytest.raises(ValueError, match="parallel.preset"):
        Parallel.create(make_mesh(8, 1, 1), "pipeline")


def test_activation_constraints_reach_the_compiled_program():
    par = Parallel.create(make_mesh(2, 2, 2), "fsdp_tp")
    model = Transformer(CFG)
    params = init_params(CFG, jax.random.PRNGKey(0))
    tokens = jnp.zeros((8, 16), jnp.int32)

    def lower():
        return jax.jit(lambda p, t: model.apply({"params": p}, t)).lower(params, tokens).as_text()

    with par.context():
        constrained = lower()
    # Layer input/output, q, k, MLP hidden and logits each carry a constraint (scanned: once).
    assert constrained.count("sharding_constraint") >= 5
    assert lower().count("sharding_constraint") == 0  # without a mesh the model is unconstrained
