"""A workdir nothing can corrupt: the lock, config-change classes, signals outside the loop, torn files,
checksummed checkpoints, I/O errors that are not corruption, and the CLI's one-line errors and --dry_run.

The end-to-end runs use `configs/sft.py:tiny` with no data or tokenizer flags: its built-in
tokenizer and rows come from the session's CODEJAX_CACHE (tests/conftest.py).
"""
import errno
import json
import re
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codejax.config import load_config_file
from codejax.jobs import get_job
from codejax.train import checkpoint as ckpt_lib
from codejax.train.checkpoint import (CheckpointIOError, Checkpointer, abstract_like, restore_params,
                                      state_checksums)
from codejax.train.config_diff import (ALLOWED, INCOMPATIBLE, RESUMABLE, ConfigChangeError, check_config_change,
                                       classify)
from codejax.train.guard import LOCK_FILE, WorkdirLock, WorkdirLocked, run_guarded
from codejax.train.metrics import read_metrics
from codejax.train.workdir import read_json, read_jsonl, write_text

ROOT = Path(__file__).resolve().parents[2]
SFT = str(ROOT / "configs" / "sft.py")


def _tiny(spec=f"{SFT}:tiny", **changes):
    config = load_config_file(spec)
    base = {"train.steps": 4, "train.log_every": 1, "train.eval_every": 0, "train.checkpoint_every": 2,
            "train.progress_bar": False, "train.async_checkpoint": False}
    for dotted, value in {**base, **changes}.items():
        section, field = dotted.split(".")
        setattr(getattr(config, section), field, value)
    return config


def _cli(workdir, *flags, spec=f"{SFT}:tiny"):
    return [sys.executable, "-m", "codejax.main", f"--config={spec}", f"--workdir={workdir}", *flags]


# ----------------------------------------------------------------------------- the lock

def test_a_second_run_is_refused_in_seconds_naming_the_holder(tmp_path):
    cold_cache = tmp_path / "empty_cache"  # the built-in rows are built only once the lock is held
    with WorkdirLock(str(tmp_path), job="sft"):
        start = time.time()
        proc = subprocess.run(_cli(tmp_path, "--config.train.steps=2"), cwd=ROOT, capture_output=True, text=True,
                              timeout=120, env={**os.environ, "CODEJAX_CACHE": str(cold_cache)})
        seconds = time.time() - start
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and f"in use by pid {os.getpid()}" in lines[0] and "job sft" in lines[0], proc.stderr
    assert not (tmp_path / "config.json").exists() and not (tmp_path / "checkpoints").exists()
    assert not cold_cache.exists()
    print(f"refused in {seconds:.1f} s")


def test_a_dead_holder_leaves_a_stale_lock_that_is_taken_over(tmp_path, caplog):
    # What a SIGKILLed run leaves: the holder record, but no flock (the kernel dropped it).
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": 999999, "host": "elsewhere", "job": "sft",
                                                  "started": "2026-01-01T00:00:00"}))
    with caplog.at_level(logging.INFO, logger="codejax.train.guard"), WorkdirLock(str(tmp_path), "dpo") as lock:
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["job"] == "dpo"
        with pytest.raises(WorkdirLocked, match=f"pid {os.getpid()}"):
            WorkdirLock(str(tmp_path)).acquire()
    assert any("pid 999999 on elsewhere" in r.getMessage() and "taking it over" in r.getMessage()
               for r in caplog.records)
    assert (tmp_path / LOCK_FILE).read_text() == ""  # released: no holder record
    lock.acquire().release()  # and free again


# ----------------------------------------------------------------------------- config-change classes

@pytest.mark.parametrize("field,kind", [
    ("train.steps", RESUMABLE), ("train.log_every", RESUMABLE), ("parallel.fsdp", RESUMABLE),
    ("optim.lr", ALLOWED), ("optim.schedule", ALLOWED), ("rl.temperature", ALLOWED),
    ("model.hidden_size", INCOMPATIBLE), ("tokenizer.path", INCOMPATIBLE), ("peft.method", INCOMPATIBLE),
    ("peft.rank", INCOMPATIBLE), ("job", INCOMPATIBLE), ("data.train_paths", INCOMPATIBLE),
    ("data.seq_len", INCOMPATIBLE), ("seed", INCOMPATIBLE), ("rl.algorithm", INCOMPATIBLE)])
def test_each_field_has_its_class(field, kind):
    assert classify(field, "sft") == kind


def test_output_jobs_refuse_any_setting_that_shapes_their_output():
    assert classify("eval.n_samples", "eval") == INCOMPATIBLE and classify("eval.n_samples", "sft") == RESUMABLE
    assert classify("eval.workers", "eval") == RESUMABLE
    assert classify("data_pipeline.seed", "data") == INCOMPATIBLE
    # The main job's own section: its stages never read it, the main job refuses any change to it.
    assert classify("quickstart.grpo_steps", "quickstart") == INCOMPATIBLE
    assert classify("quickstart.grpo_steps", "pretrain") == RESUMABLE
    assert classify("optim.lr", "quickstart") == ALLOWED and classify("train.steps", "quickstart") == RESUMABLE
    assert classify("rl.eval_prompts_path", "grpo") == INCOMPATIBLE
    assert classify("rl.env", "grpo") == INCOMPATIBLE and classify("rl.max_turns", "grpo") == ALLOWED


def test_check_config_change_names_fields_and_the_fix():
    old = {"job": "sft", "optim": {"lr": 1e-3}, "train": {"steps": 4}, "peft": {"method": "none"}}
    assert check_config_change("W", old, {**old, "train": {"steps": 8}}, allow=False)[0].kind == RESUMABLE
    with pytest.raises(ConfigChangeError, match=r"optim\.lr: 0\.001 -> 0\.0005.*allow_config_change=True"):
        check_config_change("W", old, {**old, "optim": {"lr": 5e-4}}, allow=False)
    assert check_config_change("W", old, {**old, "optim": {"lr": 5e-4}}, allow=True)[0].field == "optim.lr"
    with pytest.raises(ConfigChangeError, match=r'peft\.method: "none" -> "lora".*new --workdir'):
        check_config_change("W", old, {**old, "peft": {"method": "lora"}}, allow=True)
    # A field the saved config does not know (an older codejax wrote it) is not a change.
    assert check_config_change("W", old, {**old, "train": {"steps": 4, "new_field": 1}}, allow=False) == []


@pytest.mark.slow
def test_reruns_resume_refuse_or_record_config_changes(tmp_path):
    workdir = str(tmp_path)
    assert get_job("sft")(_tiny(), workdir)["steps"] == 4
    saved = read_json(os.path.join(workdir, "config.json"))

    # Refused before anything is written: config.json, checkpoints and metrics stay as they were.
    with pytest.raises(ConfigChangeError, match=r"optim\.lr"):
        get_job("sft")(_tiny(**{"optim.lr": 5e-4, "train.steps": 6}), workdir)
    with pytest.raises(ConfigChangeError, match=r"peft\.method"):
        get_job("sft")(_tiny(f"{SFT}:lora,tiny", **{"train.steps": 6}), workdir)
    dpo = _tiny(str(ROOT / "configs" / "dpo.py") + ":tiny")
    with pytest.raises(ConfigChangeError, match=r'job: "sft" -> "dpo"'):
        get_job("dpo")(dpo, workdir)
    assert read_json(os.path.join(workdir, "config.json")) == saved
    assert not list(tmp_path.glob("config.*.json"))

    # Resumable: more steps continue from the last checkpoint.
    summary = get_job("sft")(_tiny(**{"train.steps": 6}), workdir)
    assert summary["steps"] == 6 and summary["stop_reason"] == "completed"
    assert sorted(r["step"] for r in read_metrics(os.path.join(workdir, "metrics.jsonl")) if "train/loss" in r) \
        == [1, 2, 3, 4, 5, 6]
    # Allowed with the flag: the new value is in config.json, the earlier versions are kept. Torn files
    # from a kill or a full disk block nothing: the torn line is dropped, the torn summary ignored.
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write('{"step": 7, "train/lo')
    write_text(os.path.join(workdir, "summary.json"), '{"steps": 6, "train_ste')
    summary = get_job("sft")(_tiny(**{"train.steps": 8, "optim.lr": 5e-4, "train.allow_config_change": True}),
                             workdir)
    assert summary["steps"] == 8
    assert read_json(os.path.join(workdir, "config.json"))["optim"]["lr"] == 5e-4
    history = sorted(p.name for p in tmp_path.glob("config.*.json"))
    assert history == ["config.1.json", "config.2.json"]
    assert read_json(str(tmp_path / "config.1.json"))["train"]["steps"] == 4
    assert read_json(str(tmp_path / "config.2.json"))["optim"]["lr"] == saved["optim"]["lr"]
    steps = [r["step"] for r in read_metrics(os.path.join(workdir, "metrics.jsonl")) if "train/loss" in r]
    assert steps == list(range(1, 9))
    assert read_json(os.path.join(workdir, "summary.json"))["steps"] == 8


# ----------------------------------------------------------------------------- signals outside the loop

@pytest.mark.parametrize("sig,reason", [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "interrupted")])
def test_a_signal_outside_the_training_loop_writes_the_summary(tmp_path, sig, reason):
    write_text(str(tmp_path / "summary.json"), json.dumps({"steps": 4, "stop_reason": "completed"}))
    reached = []

    def job(config, workdir):  # model loading, data set-up, the eval and data jobs: no loop defers it
        os.kill(os.getpid(), sig)
        time.sleep(5)
        reached.append(True)
        return {}

    summary = run_guarded(job, _tiny(), str(tmp_path))
    assert not reached and summary["stop_reason"] == reason
    written = read_json(str(tmp_path / "summary.json"))
    assert written["stop_reason"] == reason and written["previous_summary"]["steps"] == 4
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_writes_the_summary_and_exits_130_and_the_console_is_quiet(tmp_path):
    flags = ["--config.train.steps=400", "--config.train.log_every=1", "--config.train.checkpoint_every=3",
             "--config.train.eval_every=0"]
    proc = subprocess.Popen(_cli(tmp_path, *flags), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 240
    while not (tmp_path / "checkpoints" / "3").is_dir():
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() is not None else ""
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stop_reason"] == "interrupted" and 3 <= summary["steps"] < 400
    assert (tmp_path / "checkpoints" / str(summary["steps"])).is_dir()
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    # Quiet by default, and it says what it runs.
    lines = err.splitlines()
    assert not [line for line in lines if "checkpoint_manager.py" in line or "atomicity.py" in line
                or line.startswith("I1")], "no Orbax/absl INFO lines at the default verbosity"
    banner = [line for line in lines if line.startswith("codejax sft:")]
    assert len(banner) == 1 and "trainable" in banner[0] and "tokens/step" in banner[0] and "400 steps" in banner[0]
    assert any(line.startswith("data:") for line in lines)


# ----------------------------------------------------------------------------- checksums

def _state():
    rng = np.random.default_rng(0)
    return {"f32": jnp.asarray(rng.normal(size=(16, 8)), jnp.float32),
            "bf16": jnp.asarray(rng.normal(size=(32,)), jnp.bfloat16),
            "i32": jnp.arange(10, dtype=jnp.int32), "flag": jnp.asarray([True, False, True]),
            "rng": jax.random.PRNGKey(3), "step": jnp.zeros((), jnp.int32)}


def test_any_single_bit_flip_changes_the_checksums():
    state = _state()
    base = state_checksums(state)
    rng = np.random.default_rng(1)
    for name, leaf in state.items():
        host = np.array(leaf)
        for _ in range(4):
            if host.dtype == np.bool_:
                flipped = host.copy()
                flipped[rng.integers(host.size)] ^= True
            else:
                raw = host.reshape(-1).view(np.uint8).copy()
                raw[rng.integers(raw.size)] ^= np.uint8(1 << rng.integers(8))
                flipped = raw.view(host.dtype).reshape(host.shape)
            changed = state_checksums({**state, name: jnp.asarray(flipped)})
            assert changed[f"['{name}']"] != base[f"['{name}']"], name
            assert {k: v for k, v in changed.items() if k != f"['{name}']"} == \
                {k: v for k, v in base.items() if k != f"['{name}']"}


def test_checksums_do_not_depend_on_the_sharding():
    x = np.arange(64 * 16, dtype=np.float32).reshape(64, 16)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("a", "b"))
    sharded = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("a", "b")))
    assert state_checksums({"x": sharded}) == state_checksums({"x": jnp.asarray(x)})


def _array_files(step_dir: Path):
    """The files a restore reads the arrays from: after Orbax merges the per-process OCDBT
    databases, state/d/* holds the b-tree and the data (ocdbt.process_*/d/* are no longer read)."""
    return sorted(p for p in (step_dir / "state" / "d").iterdir() if p.is_file())


def test_flipped_bits_in_checkpoint_files_never_restore_silently(tmp_path):
    state = _state()
    template = tmp_path / "template"
    with Checkpointer(template, save_every=1, async_save=False) as ckpt:
        for step in (1, 2):
            ckpt.save(step, jax.tree.map(lambda x: x + step if x.dtype != jnp.bool_ else x, state), {"pos": step})
    rng = np.random.default_rng(7)
    outcomes = []
    for trial in range(6):
        run = tmp_path / f"trial{trial}"
        subprocess.run(["cp", "-r", str(template), str(run)], check=True)
        files = _array_files(run / "2")
        target = files[rng.integers(len(files))]
        data = bytearray(target.read_bytes())
        data[rng.integers(len(data))] ^= 1 << int(rng.integers(8))
        target.write_bytes(bytes(data))
        with Checkpointer(run, save_every=1) as ckpt:
            restored = ckpt.restore_latest(abstract_like(state))
        if restored.step == 2:  # only acceptable if the flip hit bytes no value depends on
            expected = jax.tree.map(lambda x: x + 2 if x.dtype != jnp.bool_ else x, state)
            assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in
                       zip(jax.tree.leaves(restored.state), jax.tree.leaves(expected)))
        else:
            assert restored.step == 1 and (run / "corrupt-2").is_dir()
        outcomes.append(restored.step)
    assert outcomes.count(1) >= 4, outcomes  # nearly every flip is caught


# ----------------------------------------------------------------------------- I/O errors are not corruption

def test_transient_io_errors_are_retried_and_never_set_a_step_aside(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt_lib, "IO_RETRY_SECONDS", 0.0)
    state = {"w": jnp.ones((4,))}
    with Checkpointer(tmp_path, save_every=1, async_save=False) as ckpt:
        for step in (1, 2):
            ckpt.save(step, state, {"pos": step})
    real = Checkpointer.restore
    calls = []

    def flaky(self, step, abstract):
        calls.append(step)
        if len(calls) <= 2:
            raise OSError(errno.EIO, "Input/output error")
        return real(self, step, abstract)

    monkeypatch.setattr(Checkpointer, "restore", flaky)
    with Checkpointer(tmp_path, save_every=1) as ckpt:
        assert ckpt.restore_latest(abstract_like(state)).step == 2
    assert calls == [2, 2, 2]

    def broken(self, step, abstract):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(Checkpointer, "restore", broken)
    with Checkpointer(tmp_path, save_every=1) as ckpt, pytest.raises(CheckpointIOError, match="step 2.*left as it is"):
        ckpt.restore_latest(abstract_like(state))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "2"]  # nothing set aside or deleted


def test_a_partial_restore_that_does_not_match_names_the_missing_arrays(tmp_path):
    with Checkpointer(tmp_path, save_every=1, async_save=False) as ckpt:
        ckpt.save(1, {"params": {"w": jnp.ones((4,))}, "step": jnp.zeros((), jnp.int32)}, {})
    target = {"w": jnp.ones((4,)), "lora_a": jnp.ones((2,))}
    with pytest.raises(ValueError, match=r"no \['lora_a'\].*config"):
        restore_params(str(tmp_path / "1"), target)


# ----------------------------------------------------------------------------- torn files, read tolerantly

def test_torn_lines_are_dropped_with_file_and_line(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "tr')
    with caplog.at_level(logging.WARNING):
        assert [r["step"] for r in read_jsonl(str(path))] == [1, 2]
    assert any(f"{path}:3" in r.getMessage() for r in caplog.records)
    (tmp_path / "summary.json").write_text('{"steps": 4, "stop')
    with caplog.at_level(logging.WARNING):
        assert read_json(str(tmp_path / "summary.json")) is None
    assert any("summary.json is damaged" in r.getMessage() for r in caplog.records)


def test_atomic_writes_leave_the_old_file_when_they_fail(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    write_text(str(path), "old")

    def fail(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        write_text(str(path), "new")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


# ----------------------------------------------------------------------------- the CLI

def test_cli_typo_is_one_line_naming_the_field_and_the_suggestion(tmp_path):
    proc = subprocess.run(_cli(tmp_path, "--config.optim.lrr=1"), cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: unknown config field 'lrr' in --config.optim.lrr: Did you mean \"lr\" instead of \"lrr\"?"]


def test_cli_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    proc = subprocess.run(_cli(tmp_path / "run", "--dry_run", spec=f"{SFT}:lora,tiny"), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["job"] == "sft" and plan["steps"] == 30 and plan["tokens_per_step"] == 8 * 128
    assert 0 < plan["trainable_parameters"] < plan["parameters"]
    assert "total" in plan["memory_per_device"] and "lora" in proc.stderr  # the resolved config
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- a full disk

DISK_FULL = """
import os, jax
from codejax.train.checkpoint import Checkpointer, CheckpointWriteError, abstract_like
state = {"w": jax.random.normal(jax.random.PRNGKey(0), (256, 1024))}  # 1 MB of incompressible data a step
with Checkpointer("/small/ckpt", save_every=1, keep_latest=20, async_save=False) as ckpt:
    try:
        for step in range(1, 20):
            ckpt.save(step, jax.tree.map(lambda x: x + step, state), {"pos": step})
            ckpt.wait()
    except CheckpointWriteError as e:
        print("ERROR:", e)
print("STEPS:", sorted(int(p) for p in os.listdir("/small/ckpt") if p.isdigit()))
with Checkpointer("/small/ckpt", save_every=1) as ckpt:
    restored = ckpt.restore_latest(abstract_like(state))
    print("RESTORED:", restored.step, bool((restored.state["w"] == state["w"] + restored.step).all()))
"""


def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoints(tmp_path):
    """A real full disk: checkpoints are saved on a 2.5 MiB tmpfs the kernel enforces (bubblewrap)
    until one does not fit."""
    from codejax.sandbox.namespaces import find_bwrap
    bwrap = find_bwrap()
    if bwrap is None:
        pytest.skip("no bubblewrap for a size-limited tmpfs")
    proc = subprocess.run([bwrap, "--dev-bind", "/", "/", "--size", str(5 * 2**19), "--tmpfs", "/small",
                           sys.executable, "-c", DISK_FULL], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr[-2000:]
    errors = [line for line in proc.stdout.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, out
    failed = int(re.search(r"disk full while saving step (\d+) in /small/ckpt; previous checkpoints intact",
                           errors[0]).group(1))
    assert f"STEPS: {list(range(1, failed))}" in proc.stdout, out
    assert f"RESTORED: {failed - 1} True" in proc.stdout, out  # the last good step restores, values and all
