"""Interop and streaming tests for codejax.models.safetensors_io.

The reference implementations (safetensors' numpy/torch backends and
transformers' from_pretrained) are the oracle: our files must be readable by
them and theirs by us, bit for bit.
"""

import gc
import json
import weakref

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch

from codejax.models import safetensors_io as sio


def _bf16_from_torch(t: torch.Tensor) -> np.ndarray:
    # numpy has no bf16, so go through the raw bits.
    return t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)


def _specs(arrays: dict[str, np.ndarray]):
    return [(k, v.shape, v.dtype, lambda v=v: v) for k, v in arrays.items()]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_reads_files_from_safetensors_numpy(tmp_path, rng):
    arrays = {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f16": rng.standard_normal((7,)).astype(np.float16),
        "i64": rng.integers(-(2**40), 2**40, size=(2, 2, 3)),
        "scalar": np.array(1.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    path = tmp_path / "ref.safetensors"
    safetensors.numpy.save_file(arrays, str(path), metadata={"format": "np"})
    with sio.SafetensorsFile(path) as f:
        assert sorted(f.keys()) == sorted(arrays)
        assert f.metadata == {"format": "np"}
        for k, v in arrays.items():
            assert f.shape(k) == v.shape and f.dtype(k) == v.dtype
            got = f.get(k)
            assert got.dtype == v.dtype
            np.testing.assert_array_equal(got, v)
            assert got.flags.owndata or got.base.flags.owndata  # a standalone copy
            assert got.flags.writeable


def test_reads_bf16_from_safetensors_torch_bit_exact(tmp_path):
    t = torch.randn(4, 6).to(torch.bfloat16)
    path = tmp_path / "bf16.safetensors"
    safetensors.torch.save_file({"w": t, "f": torch.arange(3, dtype=torch.float32)}, str(path))
    with sio.SafetensorsFile(path) as f:
        got = f.get("w")
        assert got.dtype == np.dtype(ml_dtypes.bfloat16)
        np.testing.assert_array_equal(got.view(np.uint16), t.view(torch.int16).numpy().view(np.uint16))
        np.testing.assert_array_equal(f.get("f"), [0.0, 1.0, 2.0])


def test_written_files_load_with_safetensors(tmp_path, rng):
    arrays = {
        "a": rng.standard_normal((4, 3)).astype(np.float32),
        "b": rng.integers(0, 100, size=(5,)).astype(np.int32),
        "flag": np.array([True, False, True]),  # odd byte count ahead of wider dtypes
        "c": rng.integers(0, 2**50, size=(2,)).astype(np.int64),
    }
    path = tmp_path / "ours.safetensors"
    sio.save_file(path, arrays, metadata={"k": "v"})
    loaded = safetensors.numpy.load_file(str(path))
    assert sorted(loaded) == sorted(arrays)
    for k, v in arrays.items():
        assert loaded[k].dtype == v.dtype
        np.testing.assert_array_equal(loaded[k], v)
    with safetensors.safe_open(str(path), "np") as f:
        assert f.metadata() == {"k": "v"}

    # bf16 via torch, through the sharded checkpoint writer.
    t = torch.randn(8, 8).to(torch.bfloat16)
    (out := tmp_path / "ckpt").mkdir()
    (written,) = sio.write_checkpoint(out, _specs({"w": _bf16_from_torch(t)}))
    assert written.name == "model.safetensors"
    assert torch.equal(safetensors.torch.load_file(str(written))["w"], t)
    with safetensors.safe_open(str(written), "pt") as f:
        assert f.metadata() == {"format": "pt"}


def test_sharded_roundtrip(tmp_path, rng):
    arrays = {f"layer.{i}.w": rng.standard_normal((4, 4)).astype(np.float32) for i in range(6)}  # 64 B each
    arrays["mask"] = rng.integers(0, 2, size=(3,)).astype(np.uint8)
    arrays["bf"] = rng.standard_normal((2, 5)).astype(ml_dtypes.bfloat16)
    written = sio.write_checkpoint(tmp_path, _specs(arrays), max_shard_bytes=150)
    shard_names = sorted(p.name for p in written[:-1])
    assert written[-1].name == sio.INDEX_FILE
    assert len(shard_names) >= 3
    n = len(shard_names)
    assert shard_names == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    assert not list(tmp_path.glob("*.tmp"))

    index = json.loads((tmp_path / sio.INDEX_FILE).read_text())
    assert set(index["weight_map"]) == set(arrays)
    assert set(index["weight_map"].values()) == set(shard_names)
    assert index["metadata"]["total_size"] == sum(v.nbytes for v in arrays.values())

    with sio.CheckpointReader(tmp_path) as r:
        assert sorted(r.keys()) == sorted(arrays)
        for k, v in arrays.items():
            assert r.shape(k) == v.shape and r.dtype(k) == v.dtype
            np.testing.assert_array_equal(r.get(k).view(np.uint8), v.view(np.uint8))
    # Every shard is also valid for the reference reader.
    for name in shard_names:
        for k, v in safetensors.torch.load_file(str(tmp_path / name)).items():
            assert index["weight_map"][k] == name


def test_producers_are_called_lazily_one_tensor_at_a_time(tmp_path):
    calls, alive = [], []

    def producer(i):
        def produce():
            # The previous tensor must already be on its way out of memory.
            alive.append([r() is not None for r in refs])
            calls.append(i)
            arr = np.full((16,), i, dtype=np.float32)
            refs.append(weakref.ref(arr))
            return arr
        return produce

    refs: list = []
    specs = [(f"t{i}", (16,), np.float32, producer(i)) for i in range(4)]
    written = []

    def shard1_done_before_shard2():
        written.append(sorted(p.name for p in tmp_path.iterdir()))
        return producer(2)()

    specs[2] = ("t2", (16,), np.float32, shard1_done_before_shard2)
    sio.write_checkpoint(tmp_path, specs, max_shard_bytes=128)  # two tensors per shard
    assert calls == [0, 1, 2, 3]
    gc.collect()
    assert all(not any(a) for a in alive), alive  # no earlier tensor was alive at any producer call
    assert written == [["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors.tmp"]]


def test_truncated_and_corrupt_files_raise_value_error(tmp_path):
    good = tmp_path / "good.safetensors"
    safetensors.numpy.save_file({"x": np.arange(10, dtype=np.float32)}, str(good))
    raw = good.read_bytes()

    cases = {
        "short.safetensors": raw[:-4],  # data cut off
        "tiny.safetensors": raw[:5],  # not even a header length
        "hdr.safetensors": raw[:20],  # header cut off
        "json.safetensors": (8).to_bytes(8, "little") + b"{not js}",
        "dtype.safetensors": _raw_header({"x": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 1]}}, b"\0"),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=name):
            sio.SafetensorsFile(tmp_path / name)
    with pytest.raises(ValueError, match="'x'"):
        sio.SafetensorsFile(tmp_path / "short.safetensors")


def _raw_header(header: dict, data: bytes) -> bytes:
    h = json.dumps(header).encode()
    return len(h).to_bytes(8, "little") + h + data


def test_missing_tensor_and_missing_checkpoint(tmp_path):
    sio.write_checkpoint(tmp_path / "one", _specs({"a": np.zeros(2, np.float32)}))
    sio.write_checkpoint(tmp_path / "many", _specs({k: np.zeros(4, np.float32) for k in "abc"}), max_shard_bytes=16)
    for d in ("one", "many"):
        with sio.CheckpointReader(tmp_path / d) as r:
            with pytest.raises(KeyError, match="nope") as e:
                r.get("nope")
            assert d in str(e.value)

    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        sio.CheckpointReader(tmp_path / "empty")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="only safetensors"):
        sio.CheckpointReader(tmp_path / "bin")

    with pytest.raises(FileExistsError):
        sio.write_checkpoint(tmp_path / "many", _specs({"a": np.zeros(2, np.float32)}))
    sio.write_checkpoint(tmp_path / "many", _specs({"z": np.ones(2, np.float32)}), overwrite=True)
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["model.safetensors"]


def test_producer_shape_or_dtype_mismatch(tmp_path):
    bad_shape = [("ok", (2,), np.float32, lambda: np.zeros(2, np.float32)),
                 ("bad", (2, 2), np.float32, lambda: np.zeros((4,), np.float32))]
    with pytest.raises(ValueError, match="'bad'"):
        sio.write_checkpoint(tmp_path / "s", bad_shape)
    assert not (tmp_path / "s" / "model.safetensors").exists()
    assert not list((tmp_path / "s").iterdir())  # the temp file is cleaned up

    bad_dtype = [("w", (2,), ml_dtypes.bfloat16, lambda: np.zeros(2, np.float32))]
    with pytest.raises(ValueError, match="'w'"):
        sio.write_checkpoint(tmp_path / "d", bad_dtype)


def test_transformers_roundtrip(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).to(torch.bfloat16).eval()
    ref = {k: v.detach().clone() for k, v in model.state_dict().items()}
    specs = [(k, tuple(v.shape), ml_dtypes.bfloat16, lambda v=v: _bf16_from_torch(v)) for k, v in ref.items()]

    written = sio.write_checkpoint(tmp_path, specs, max_shard_bytes=4096)  # embeddings alone are 2 KiB
    assert written[-1].name == sio.INDEX_FILE  # exercise transformers' sharded loading
    config.save_pretrained(tmp_path)

    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    got = loaded.state_dict()
    assert set(got) == set(ref)
    for k, v in ref.items():
        assert got[k].dtype == torch.bfloat16
        assert torch.equal(got[k], v), k
