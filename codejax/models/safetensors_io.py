"""Tensor-by-tensor reading and writing of Hugging Face safetensors checkpoints.

Why not just use ``safetensors.numpy``: its ``load_file`` materialises every
tensor of a file at once and its ``save_file`` needs the whole dict in memory,
so converting a multi-GB checkpoint costs about twice its size in host RAM.
Its numpy backend also cannot represent bfloat16, which is the dtype most
checkpoints ship in.  Here every tensor is read with a single ``readinto`` into
a fresh array, and written from a producer callback that is only invoked when
its bytes are due, so peak host memory is one tensor.  bfloat16 and the fp8
formats map to ``ml_dtypes`` types, which numpy and JAX both understand.

File layout (https://github.com/huggingface/safetensors): an 8-byte
little-endian header length ``N``, ``N`` bytes of UTF-8 JSON mapping each
tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets
relative to the first byte after the header) plus an optional
``"__metadata__": {str: str}``, then the raw little-endian tensor bytes.

Arrays are assumed little-endian in memory (true for every host JAX runs on);
big-endian inputs to the writer are byte-swapped before writing.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from pathlib import Path
from typing import Callable, Iterable, Mapping, NamedTuple, Sequence

import ml_dtypes
import numpy as np

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_SHARD_RE = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
_METADATA_KEY = "__metadata__"
# Header entries are padded to this so the data section starts 8-byte aligned,
# as the reference writer does; some readers rely on it for zero-copy mmap.
_ALIGN = 8

DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype(np.bool_),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),  # torch.float8_e4m3fn
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "F8_E4M3FNUZ": np.dtype(ml_dtypes.float8_e4m3fnuz),
    "F8_E5M2FNUZ": np.dtype(ml_dtypes.float8_e5m2fnuz),
}
_CODES: dict[np.dtype, str] = {dt: code for code, dt in DTYPES.items()}


class TensorSpec(NamedTuple):
    """One tensor to write: its layout up front, its data only on demand."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    produce: Callable[[], np.ndarray]


def dtype_code(dtype) -> str:
    """The safetensors dtype string for a numpy dtype (any byte order)."""
    dt = np.dtype(dtype)
    if dt.byteorder == ">":
        dt = dt.newbyteorder("<")
    try:
        return _CODES[dt]
    except KeyError:
        raise ValueError(f"dtype {dt} has no safetensors equivalent") from None


def _nbytes(shape: Sequence[int], dtype: np.dtype) -> int:
    return math.prod(shape) * dtype.itemsize


# ----------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------


class _Entry(NamedTuple):
    dtype: np.dtype
    shape: tuple[int, ...]
    begin: int  # absolute file offset, so reads need no further arithmetic
    nbytes: int


def _parse_entry(path: Path, name: str, info, data_start: int, data_size: int) -> _Entry:
    """Validates one header entry; every failure names the file and tensor."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(info, dict):
        raise ValueError(f"{where}: header entry is not an object")
    code = info.get("dtype")
    if code not in DTYPES:
        raise ValueError(f"{where}: unsupported dtype {code!r} (known: {sorted(DTYPES)})")
    dtype = DTYPES[code]
    shape = info.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ValueError(f"{where}: bad shape {shape!r}")
    offsets = info.get("data_offsets")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise ValueError(f"{where}: bad data_offsets {offsets!r}")
    begin, end = offsets
    if end > data_size:
        raise ValueError(
            f"{where}: data_offsets {offsets} run past the end of the data "
            f"({data_size} bytes); the file is truncated or corrupt"
        )
    if end - begin != _nbytes(shape, dtype):
        raise ValueError(f"{where}: {end - begin} bytes do not fit shape {shape} of {code}")
    return _Entry(dtype, tuple(shape), data_start + begin, end - begin)


class SafetensorsFile:
    """One open ``.safetensors`` file; tensors are read on demand.

    The header is parsed and fully validated on open, so a corrupt file fails
    early with a ``ValueError`` naming it rather than midway through a load.
    ``get`` returns a fresh, writable array that owns its memory (one
    ``readinto`` straight into it, no intermediate ``bytes``), so callers may
    keep or mutate it after the file is closed.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._file = open(self.path, "rb")
        try:
            self._entries, self.metadata = self._read_header()
        except BaseException:
            self._file.close()
            raise

    def _read_header(self) -> tuple[dict[str, _Entry], dict[str, str]]:
        size = os.fstat(self._file.fileno()).st_size
        prefix = self._file.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{self.path}: truncated file ({size} bytes, no header length)")
        (n,) = struct.unpack("<Q", prefix)
        # Checked before reading so a garbage length cannot trigger a huge allocation.
        if n > size - 8:
            raise ValueError(f"{self.path}: truncated file (header claims {n} bytes, file has {size})")
        try:
            header = json.loads(self._file.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{self.path}: header is not valid UTF-8 JSON ({e})") from None
        if not isinstance(header, dict):
            raise ValueError(f"{self.path}: header is not a JSON object")
        metadata = header.pop(_METADATA_KEY, None) or {}
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise ValueError(f"{self.path}: __metadata__ must map str to str")
        entries = {
            name: _parse_entry(self.path, name, info, 8 + n, size - 8 - n)
            for name, info in header.items()
        }
        return entries, metadata

    def _entry(self, name: str) -> _Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"tensor {name!r} not found in {self.path}") from None

    def keys(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entry(name).shape

    def dtype(self, name: str) -> np.dtype:
        return self._entry(name).dtype

    def get(self, name: str) -> np.ndarray:
        """Reads one tensor into a new array (memory: exactly that tensor)."""
        e = self._entry(name)
        # uint8 buffer then view: memoryview cannot export ml_dtypes types.
        buf = np.empty(e.nbytes, dtype=np.uint8)
        self._file.seek(e.begin)
        got = self._file.readinto(memoryview(buf))
        if got != e.nbytes:
            # Only possible if the file shrank after open; the header check covers the rest.
            raise ValueError(f"{self.path}: tensor {name!r}: short read ({got} of {e.nbytes} bytes)")
        return buf.view(e.dtype).reshape(e.shape)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "SafetensorsFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read_index(index_path: Path) -> dict[str, str]:
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{index_path}: not valid JSON ({e})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise ValueError(f"{index_path}: missing or malformed 'weight_map'")
    for shard in set(weight_map.values()):
        # Shards must be siblings of the index; never follow paths out of the directory.
        if Path(shard).name != shard:
            raise ValueError(f"{index_path}: shard name {shard!r} is not a plain file name")
    return weight_map


class CheckpointReader:
    """Lazy reader over a Hugging Face checkpoint directory.

    Accepts ``model.safetensors`` or a sharded ``model.safetensors.index.json``
    (a path to a single ``.safetensors`` file also works).  When both layouts
    are present the single file wins, matching transformers' own preference, so
    we read exactly what ``from_pretrained`` would.  Shards are opened on first
    use and kept open until ``close``.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._open: dict[str, SafetensorsFile] = {}
        if self.path.is_file():
            self.root = self.path.parent
            self._weight_map = None
            self._single = self.path.name
        elif (self.path / SINGLE_FILE).is_file():
            self.root, self._weight_map, self._single = self.path, None, SINGLE_FILE
        elif (self.path / INDEX_FILE).is_file():
            self.root, self._single = self.path, None
            self._weight_map = _read_index(self.path / INDEX_FILE)
        elif any((self.path / n).exists() for n in ("pytorch_model.bin", "pytorch_model.bin.index.json")):
            raise FileNotFoundError(
                f"{self.path} holds only PyTorch pickle weights (pytorch_model.bin); only "
                f"safetensors is supported, convert it first (e.g. save_pretrained(safe_serialization=True))"
            )
        else:
            raise FileNotFoundError(f"no {SINGLE_FILE} or {INDEX_FILE} in {self.path}")

    def _file(self, filename: str) -> SafetensorsFile:
        if filename not in self._open:
            shard = self.root / filename
            if not shard.is_file():
                raise FileNotFoundError(f"shard {filename} listed in {self.root / INDEX_FILE} is missing")
            self._open[filename] = SafetensorsFile(shard)
        return self._open[filename]

    def _locate(self, name: str) -> SafetensorsFile:
        if self._weight_map is None:
            f = self._file(self._single)
        elif name in self._weight_map:
            f = self._file(self._weight_map[name])
        else:
            raise KeyError(f"tensor {name!r} not found in checkpoint {self.path}")
        if name not in f:
            raise KeyError(f"tensor {name!r} not found in checkpoint {self.path} ({f.path.name})")
        return f

    def keys(self) -> list[str]:
        # Sharded keys come from the index, so listing them opens no shard.
        if self._weight_map is not None:
            return list(self._weight_map)
        return self._file(self._single).keys()

    def __contains__(self, name: str) -> bool:
        return name in self.keys()

    def shape(self, name: str) -> tuple[int, ...]:
        return self._locate(name).shape(name)

    def dtype(self, name: str) -> np.dtype:
        return self._locate(name).dtype(name)

    def get(self, name: str) -> np.ndarray:
        return self._locate(name).get(name)

    def close(self) -> None:
        for f in self._open.values():
            f.close()
        self._open.clear()

    def __enter__(self) -> "CheckpointReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------


def _normalize(spec) -> TensorSpec:
    name, shape, dtype, produce = spec
    if not isinstance(name, str) or name == _METADATA_KEY:
        raise ValueError(f"invalid tensor name {name!r}")
    shape = tuple(int(d) for d in shape)
    dtype_code(dtype)  # fail at planning time, before any file is touched
    return TensorSpec(name, shape, np.dtype(dtype), produce)


def plan_shards(specs: Sequence[TensorSpec], max_shard_bytes: int) -> list[list[TensorSpec]]:
    """Greedy, order-preserving split into shards of at most ``max_shard_bytes``.

    Same policy as transformers: a tensor larger than the limit gets a shard
    of its own rather than being split (safetensors cannot split tensors).
    """
    shards: list[list[TensorSpec]] = [[]]
    size = 0
    for s in specs:
        n = _nbytes(s.shape, s.dtype)
        if shards[-1] and size + n > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(s)
        size += n
    return shards


def _layout(specs: Sequence[TensorSpec]) -> list[TensorSpec]:
    # Widest itemsize first keeps every tensor naturally aligned inside the
    # (8-byte aligned) data section, as the reference writer does, because
    # safetensors forbids padding gaps between tensors. sorted() is stable.
    return sorted(specs, key=lambda s: -s.dtype.itemsize)


def _header_bytes(specs: Sequence[TensorSpec], metadata: Mapping[str, str] | None) -> bytes:
    header: dict = {}
    if metadata:
        header[_METADATA_KEY] = dict(metadata)
    offset = 0
    for s in specs:
        end = offset + _nbytes(s.shape, s.dtype)
        header[s.name] = {"dtype": dtype_code(s.dtype), "shape": list(s.shape), "data_offsets": [offset, end]}
        offset = end
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % _ALIGN)
    return struct.pack("<Q", len(raw)) + raw


def _produce(spec: TensorSpec) -> np.ndarray:
    """Calls the producer and checks it returned what the header promised."""
    arr = np.asarray(spec.produce())  # also accepts jax arrays
    if arr.shape != spec.shape or dtype_code(arr.dtype) != dtype_code(spec.dtype):
        raise ValueError(
            f"tensor {spec.name!r}: producer returned shape {arr.shape} {arr.dtype}, "
            f"planned {spec.shape} {spec.dtype}"
        )
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    # Copies only if the array is strided; reshape(-1) first because a 0-d
    # array cannot be re-viewed as bytes.
    return np.ascontiguousarray(arr).reshape(-1).view(np.uint8)


def _write_file(path: Path, specs: Sequence[TensorSpec], metadata: Mapping[str, str] | None) -> None:
    """Writes one safetensors file, holding at most one tensor in memory.

    Goes through ``<path>.tmp`` + ``os.replace`` so an interrupted write
    never leaves a file that looks complete at the final name.
    """
    if metadata and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ValueError(f"{path}: metadata must map str to str, got {dict(metadata)!r}")
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(_header_bytes(specs, metadata))
            for spec in specs:
                data = _produce(spec)
                f.write(memoryview(data))
                # Drop our reference before the next producer runs, or two
                # tensors would be alive at once.
                del data
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _existing_checkpoint_files(out_dir: Path) -> list[Path]:
    return [p for p in out_dir.iterdir() if p.name in (SINGLE_FILE, INDEX_FILE) or _SHARD_RE.fullmatch(p.name)]


def write_checkpoint(
    out_dir: str | os.PathLike,
    tensors: Iterable[TensorSpec | tuple],
    max_shard_bytes: int = 5 * 2**30,
    metadata: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Streams ``(name, shape, dtype, produce)`` tensors into an HF checkpoint.

    All headers need every offset up front, so shards are planned from the
    declared shapes and dtypes alone; each ``produce()`` is then called just
    before its bytes are written and must return exactly the declared shape
    and dtype (``ValueError`` naming the tensor otherwise).  Producers run in
    file order (per shard: wider dtypes first, otherwise input order).

    Writes ``model.safetensors`` if everything fits one shard, else
    ``model-0000i-of-0000N.safetensors`` plus ``model.safetensors.index.json``,
    the index last so a partial write is never mistaken for a checkpoint.
    ``metadata`` is stored in every shard on top of ``{"format": "pt"}``, which
    transformers requires.  Existing checkpoint files in ``out_dir`` raise
    ``FileExistsError`` unless ``overwrite`` (then they are deleted first),
    because stale shards mixed with new ones would load silently wrong.
    Returns the written paths.
    """
    out_dir = Path(out_dir)
    specs = [_normalize(s) for s in tensors]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate tensor names: {dup}")
    meta = {"format": "pt", **(metadata or {})}
    out_dir.mkdir(parents=True, exist_ok=True)
    stale = _existing_checkpoint_files(out_dir)
    if stale and not overwrite:
        raise FileExistsError(f"{out_dir} already holds a checkpoint ({sorted(p.name for p in stale)}); pass overwrite=True")
    for p in stale:
        p.unlink()

    shards = plan_shards(specs, max_shard_bytes)
    if len(shards) == 1:
        path = out_dir / SINGLE_FILE
        _write_file(path, _layout(shards[0]), meta)
        return [path]

    written, weight_map = [], {}
    for i, shard in enumerate(shards, start=1):
        path = out_dir / f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        _write_file(path, _layout(shard), meta)
        weight_map.update({s.name: path.name for s in shard})
        written.append(path)
    index = {
        "metadata": {"total_size": sum(_nbytes(s.shape, s.dtype) for s in specs)},
        "weight_map": dict(sorted(weight_map.items())),
    }
    index_path = out_dir / INDEX_FILE
    tmp = index_path.with_name(INDEX_FILE + ".tmp")
    tmp.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, index_path)
    return written + [index_path]


def save_file(
    path: str | os.PathLike, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> None:
    """Writes in-memory arrays to one ``.safetensors`` file (no sharding).

    Unlike ``write_checkpoint`` no ``"format"`` entry is added: this mirrors
    ``safetensors.numpy.save_file`` and stores exactly the metadata given.
    """
    specs = [_normalize((k, np.shape(v), np.asarray(v).dtype, lambda v=v: v)) for k, v in tensors.items()]
    _write_file(Path(path), _layout(specs), metadata)
