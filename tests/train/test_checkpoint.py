"""Tests for codejax.train.checkpoint: exact resume, retention, damage tolerance.

The state is the real shape of a train state (params with a bf16 leaf, adamw
state, step, PRNG key), small enough that a save takes milliseconds.
"""
import logging
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from codejax.train.checkpoint import Checkpointer, abstract_like

LOGGER = "codejax.train.checkpoint"

# A failed tensorstore read (the damaged-step tests) leaves callbacks that fire
# after Orbax has closed its event loop, and coroutines it never awaits, at
# times during a later test; that is noise from inside Orbax, not a failure.
pytestmark = [
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning"),
]


def _state(seed: int = 0):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = {
        "dense": {"kernel": jax.random.normal(k1, (64, 32), jnp.float32),
                  "bias": jax.random.normal(k2, (32,), jnp.float32)},
        "embed": jax.random.normal(k3, (16, 16), jnp.float32).astype(jnp.bfloat16),
    }
    opt_state = optax.adamw(1e-3).init(params)
    # Non-zero moments so a restore that returned zeros would be caught.
    opt_state = jax.tree.map(lambda x: x + jnp.ones_like(x) * 0.25, opt_state)
    return {"step": jnp.asarray(7, jnp.int32), "params": params, "opt_state": opt_state,
            "rng": jax.random.PRNGKey(3)}


def _assert_bit_identical(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        g, w = np.asarray(g), np.asarray(w)
        assert g.dtype == w.dtype and g.shape == w.shape
        assert g.tobytes() == w.tobytes()  # bitwise, so NaNs and -0.0 count too


def _save_steps(directory, steps, **kw):
    state = _state()
    with Checkpointer(directory, save_every=1, **kw) as ckpt:
        for s in steps:
            assert ckpt.save(s, state, {"pos": s}, {"loss": float(s)})
    return state


def test_async_save_restores_bit_identical_in_a_fresh_checkpointer(tmp_path):
    state = _state()
    want = jax.device_get(state)
    ckpt = Checkpointer(tmp_path, save_every=2)
    assert ckpt.save(4, state, {"epoch": 1, "pos": [3, 9]}, {"loss": jnp.float32(0.5)})
    # The loop donates its state to the next step right away; the async save
    # must already hold its own host copy.
    for leaf in jax.tree.leaves(state):
        leaf.delete()
    ckpt.close()

    again = Checkpointer(tmp_path, save_every=2)
    assert again.all_steps() == [4]
    step, restored, data_state, metrics = again.restore_latest(abstract_like(want))
    again.close()
    assert step == 4
    _assert_bit_identical(restored, want)
    assert data_state == {"epoch": 1, "pos": [3, 9]}
    assert metrics == {"loss": 0.5}


def test_restore_uses_the_abstract_shardings(tmp_path):
    state = _state()
    _save_steps(tmp_path, [1])
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("x",))
    sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x"))
    abstract = abstract_like(state)
    kernel = abstract["params"]["dense"]["kernel"]
    abstract["params"]["dense"]["kernel"] = jax.ShapeDtypeStruct(kernel.shape, kernel.dtype,
                                                                 sharding=sharded)
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        _, restored, _, _ = ckpt.restore(1, abstract)
    assert restored["params"]["dense"]["kernel"].sharding == sharded
    _assert_bit_identical(restored, state)


@pytest.mark.parametrize("mode, kept, best", [("min", [2, 5, 7, 8], 5), ("max", [1, 6, 7, 8], 6)])
def test_retention_keeps_latest_plus_best(tmp_path, mode, kept, best):
    losses = {1: 5.0, 2: 1.0, 3: 4.0, 4: 3.0, 5: 0.5, 6: 6.0, 7: 2.5, 8: 2.0}
    state = _state()
    kw = dict(save_every=1, keep_latest=2, keep_best=2, best_metric="loss", best_mode=mode)
    with Checkpointer(tmp_path, **kw) as ckpt:
        for step, loss in losses.items():
            assert ckpt.save(step, state, {"pos": step}, {"loss": loss, "acc": 1.0})
        ckpt.wait()
        assert ckpt.all_steps() == kept
        assert ckpt.best_step() == best
    assert sorted(int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()) == kept
    # A new process ranks by the metrics on disk, not by memory.
    with Checkpointer(tmp_path, **kw) as reopened:
        assert reopened.all_steps() == kept
        assert reopened.best_step() == best


def test_steps_without_the_metric_are_not_kept_as_best(tmp_path):
    state = _state()
    with Checkpointer(tmp_path, save_every=1, keep_latest=1, keep_best=1,
                      best_metric="eval_loss") as ckpt:
        ckpt.save(1, state, {}, {"eval_loss": 0.1})
        ckpt.save(2, state, {}, {"train_loss": 0.01})  # no eval this step
        ckpt.save(3, state, {}, None)
        ckpt.save(4, state, {}, {"eval_loss": float("nan")})
        ckpt.wait()
        assert ckpt.all_steps() == [1, 4]
        assert ckpt.best_step() == 1


def test_save_every_and_force(tmp_path):
    state = _state()
    with Checkpointer(tmp_path, save_every=3) as ckpt:
        # Orbax's default would save the first step into an empty directory.
        assert [ckpt.save(s, state, {}) for s in (1, 2, 3)] == [False, False, True]
        assert ckpt.save(4, state, {}, force=True)
        assert [ckpt.save(s, state, {}) for s in (5, 6)] == [False, True]
        assert not ckpt.save(6, state, {})  # already saved: skipped, not an error
        ckpt.wait()
        assert ckpt.all_steps() == [4, 6]  # keep_latest=2 dropped step 3


def _array_files(step_dir):
    return [p for p in step_dir.glob("state/**/d/*") if p.is_file()]


def _truncate_arrays(step_dir):
    for p in _array_files(step_dir):
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _delete_arrays(step_dir):
    for p in _array_files(step_dir):
        p.unlink()


def _garbage_tree_metadata(step_dir):
    (step_dir / "state" / "_METADATA").write_text("{not json")


def _garbage_data_state(step_dir):
    (step_dir / "data" / "metadata").write_bytes(b"\x00\xff garbage")


@pytest.mark.parametrize("damage", [_truncate_arrays, _delete_arrays, _garbage_tree_metadata,
                                    _garbage_data_state])
def test_restore_latest_falls_back_past_a_damaged_step(tmp_path, caplog, damage):
    state = _save_steps(tmp_path, [1, 2, 3])
    assert _array_files(tmp_path / "3")  # the glob must find what it damages
    damage(tmp_path / "3")
    with caplog.at_level(logging.WARNING, logger=LOGGER), Checkpointer(tmp_path, save_every=1) as ckpt:
        step, restored, data_state, metrics = ckpt.restore_latest(abstract_like(state))
    assert step == 2 and data_state == {"pos": 2} and metrics == {"loss": 2.0}
    _assert_bit_identical(restored, state)
    warnings = [r.getMessage() for r in caplog.records
                if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "step 3" in warnings[0] and "could not be restored" in warnings[0]
    # The damaged step is moved aside, never deleted, and the warning says where.
    assert str(tmp_path / "corrupt-3") in warnings[1] and (tmp_path / "corrupt-3").is_dir()
    assert not (tmp_path / "3").exists()

    # Resuming from step 2 must be able to save step 3 again, next to the set-aside copy.
    caplog.clear()
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        assert ckpt.restore_latest(abstract_like(state)).step == 2
        assert ckpt.save(3, state, {"pos": 3})
        step, restored, data_state, _ = ckpt.restore_latest(abstract_like(state))
    assert step == 3 and data_state == {"pos": 3}
    _assert_bit_identical(restored, state)
    assert (tmp_path / "corrupt-3").is_dir()


def test_garbage_step_bookkeeping_alone_does_not_discard_a_step(tmp_path, caplog):
    # _CHECKPOINT_METADATA holds timestamps and handler names, not data; Orbax
    # logs an error for it but the arrays are intact, so step 3 is still good.
    state = _save_steps(tmp_path, [1, 2, 3])
    (tmp_path / "3" / "_CHECKPOINT_METADATA").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger=LOGGER), Checkpointer(tmp_path, save_every=1) as ckpt:
        step, restored, _, _ = ckpt.restore_latest(abstract_like(state))
    assert step == 3
    _assert_bit_identical(restored, state)
    assert not [r for r in caplog.records if r.name == LOGGER]


def test_unreadable_metrics_file_does_not_block_resume(tmp_path, caplog):
    # Orbax reads every step's metrics when it opens a directory and would
    # raise on this one.
    state = _save_steps(tmp_path, [1, 2], keep_latest=5, best_metric="loss")
    (tmp_path / "1" / "metrics" / "metrics").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger=LOGGER), \
            Checkpointer(tmp_path, save_every=1, keep_latest=5, best_metric="loss") as ckpt:
        assert ckpt.all_steps() == [1, 2]
        assert ckpt.best_step() == 2  # step 1 (loss 1.0) is no longer ranked
        step, restored, _, _ = ckpt.restore(1, abstract_like(state))
    _assert_bit_identical(restored, state)
    assert any("step 1" in r.getMessage() and "metrics" in r.getMessage()
               for r in caplog.records if r.name == LOGGER)


def test_a_crashed_save_left_as_a_tmp_dir_is_ignored_and_cleaned(tmp_path, caplog):
    state = _save_steps(tmp_path, [1, 2])
    # What a crash mid-save leaves: a complete-looking step under a tmp name,
    # in both the older timestamped and the current naming.
    shutil.copytree(tmp_path / "2", tmp_path / "3.orbax-checkpoint-tmp-1700000000")
    shutil.copytree(tmp_path / "2", tmp_path / "4.orbax-checkpoint-tmp")
    with caplog.at_level(logging.WARNING, logger=LOGGER), Checkpointer(tmp_path, save_every=1) as ckpt:
        assert ckpt.all_steps() == [1, 2]
        assert ckpt.restore_latest(abstract_like(state)).step == 2
        assert ckpt.save(3, state, {"pos": 3})
    assert not [r for r in caplog.records if r.name == LOGGER]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name[0].isdigit()) == ["2", "3"]


def test_no_checkpoint_gives_none(tmp_path):
    with Checkpointer(tmp_path / "fresh", save_every=10) as ckpt:
        assert ckpt.all_steps() == [] and ckpt.best_step() is None
        assert ckpt.restore_latest(abstract_like(_state())) is None


def test_all_steps_failing_raises_instead_of_starting_over(tmp_path):
    state = _save_steps(tmp_path, [1, 2])
    wrong = abstract_like({**state, "params": {"other": jnp.zeros((3,))}})
    with Checkpointer(tmp_path, save_every=1) as ckpt, pytest.raises(RuntimeError, match="tried steps 2, 1"):
        ckpt.restore_latest(wrong)


def test_bad_options_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="best_metric"):
        Checkpointer(tmp_path, save_every=1, keep_best=1)
    with pytest.raises(ValueError, match="keep_latest"):
        Checkpointer(tmp_path, save_every=1, keep_latest=0)


def test_relative_directory_works(tmp_path, monkeypatch):
    """`--workdir runs/x` is relative; Orbax itself only accepts absolute paths."""
    monkeypatch.chdir(tmp_path)
    state = {"w": jnp.arange(4.0)}
    with Checkpointer("runs/x/checkpoints", save_every=1, async_save=False) as ckpt:
        assert ckpt.save(1, state, {"i": 1})
    with Checkpointer("runs/x/checkpoints", save_every=1) as ckpt:
        restored = ckpt.restore_latest(abstract_like(state))
    assert restored.step == 1 and (tmp_path / "runs" / "x" / "checkpoints" / "1").is_dir()
    np.testing.assert_array_equal(restored.state["w"], state["w"])
