"""Experiment trackers (codejax/train/tracking.py): TensorBoard scalars and HParams, W&B offline."""
import glob
import os
import struct

import ml_collections
import pytest
from tensorboardX.proto import event_pb2

from codejax.train.metrics import MetricsWriter
from codejax.train.tracking import TrackingError, summary_figures, trackers_for, wandb_run_id


def _config(**train):
    return ml_collections.ConfigDict({"optim": {"lr": 3e-4, "schedule": "cosine"},
                                      "train": {"steps": 4, "wandb_project": "", "wandb_entity": "",
                                                "wandb_mode": "online", "wandb_run_name": "", "wandb_dir": "",
                                                **train}})


def _events(logdir: str) -> list:
    """Every Event in the TFRecord files under logdir (length, crc, payload, crc)."""
    out = []
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            data = f.read()
        at = 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[at + 12:at + 12 + length])
            out.append(event)
            at += 12 + length + 4
    return out


def test_tensorboard_gets_the_scalars_and_the_config_as_hparams(tmp_path):
    writer = MetricsWriter(str(tmp_path), resume_step=-1, config=_config())
    writer.write(1, {"train/loss": 2.0, "note": "text rows are not scalars"})
    writer.write(2, {"train/loss": 1.5})
    writer.close({"steps": 2, "best_eval": 1.25, "last_eval": {"eval/loss": 1.3}, "stop_reason": "completed"})
    events = _events(str(tmp_path / "tensorboard"))
    scalars = {(v.tag, e.step): v.simple_value for e in events if e.HasField("summary") for v in e.summary.value
               if v.HasField("simple_value")}
    assert scalars[("train/loss", 1)] == 2.0 and scalars[("train/loss", 2)] == 1.5
    assert scalars[("summary/best_eval", 2)] == 1.25 and scalars[("summary/last_eval/eval/loss", 2)] == pytest.approx(1.3)
    plugins = [v.metadata.plugin_data for e in events if e.HasField("summary") for v in e.summary.value
               if v.metadata.plugin_data.plugin_name == "hparams"]
    assert plugins, "no HParams summary written"
    blob = b"".join(p.content for p in plugins)
    for name in (b"optim.lr", b"optim.schedule", b"train.steps", b"train/loss", b"summary/best_eval"):
        assert name in blob, name


def test_summary_figures_keep_finite_numbers_only():
    assert summary_figures({"a": 1, "b": float("nan"), "c": True, "d": {"e": 2.5}, "f": "x"}) == {"a": 1.0, "d/e": 2.5}


def test_a_bad_wandb_mode_names_the_field():
    with pytest.raises(TrackingError, match=r"train\.wandb_mode='offlne'"):
        trackers_for(_config(wandb_project="p", wandb_mode="offlne"))
    assert [type(t).__name__ for t in trackers_for(_config(wandb_project="p", wandb_mode="disabled"))] \
        == ["TensorBoardTracker"]


def test_the_wandb_run_id_survives_a_resume_and_not_a_fresh_start(tmp_path):
    first = wandb_run_id(str(tmp_path), resume_step=-1)
    assert wandb_run_id(str(tmp_path), resume_step=3) == first
    assert wandb_run_id(str(tmp_path), resume_step=-1) != first


def test_wandb_offline_run_lives_in_the_workdir_and_a_resume_continues_it(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for key in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = _config(wandb_project="codejax-test", wandb_mode="offline")
    writer = MetricsWriter(str(tmp_path), resume_step=-1, config=config)
    writer.write(1, {"train/loss": 2.0})
    writer.close({"steps": 1})
    run_id = (tmp_path / "wandb_run_id").read_text().strip()
    runs = glob.glob(str(tmp_path / "wandb" / "offline-run-*"))
    assert len(runs) == 1 and runs[0].endswith(run_id)
    assert glob.glob(os.path.join(runs[0], "*.wandb"))  # the run's records, for `wandb sync`

    writer = MetricsWriter(str(tmp_path), resume_step=1, config=config)
    writer.write(2, {"train/loss": 1.0})
    writer.close({"steps": 2})
    assert (tmp_path / "wandb_run_id").read_text().strip() == run_id
    assert all(r.endswith(run_id) for r in glob.glob(str(tmp_path / "wandb" / "offline-run-*")))
