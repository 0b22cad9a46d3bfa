"""Read TensorFlow V2 checkpoints (tensor bundles) without TensorFlow.

A bundle is ``<prefix>.index`` (a LevelDB-format table: header plus one entry per tensor, saying which
``<prefix>.data-SSSSS-of-NNNNN`` shard holds its bytes, where, and their masked crc32c) and the data shards
(raw little-endian tensor bytes, nothing else). Every block and every tensor is checksum-verified.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zhcls.errors import ZhclsError

# ---------------------------------------------------------------------------------------------------------------
# crc32c (Castagnoli)

_POLY = 0x82F63B78  # reflected polynomial
_MASK_DELTA = 0xA282EAD8


def _zero_bit_steps(reg: np.ndarray, steps: int) -> np.ndarray:
    """Shift CRC registers through ``steps`` zero bits (the definition of the CRC, one bit at a time)."""
    for _ in range(steps):
        reg = (reg >> np.uint32(1)) ^ (np.uint32(_POLY) * (reg & np.uint32(1)))
    return reg


_BYTE_TABLE: list[int] = _zero_bit_steps(np.arange(256, dtype=np.uint32), 8).tolist()


def _crc_bytewise(reg: int, data) -> int:
    """The classic one-table loop; only used for short inputs (about 10 MB/s)."""
    table = _BYTE_TABLE
    for byte in bytes(data):
        reg = table[(reg ^ byte) & 0xFF] ^ (reg >> 8)
    return reg


# A "zero shift" (running the register over n zero bytes) is linear over GF(2): it is stored as the images of the
# 32 unit vectors. Powers of two are cached, so any shift is a product of at most ~40 of them.
_SHIFT_POW2: list[list[int]] = [_zero_bit_steps(np.uint32(1) << np.arange(32, dtype=np.uint32), 8).tolist()]


def _apply(op: list[int], reg: int) -> int:
    out, bit = 0, 0
    while reg:
        if reg & 1:
            out ^= op[bit]
        reg >>= 1
        bit += 1
    return out


def _zero_shift(nbytes: int) -> list[int]:
    op = [1 << k for k in range(32)]
    k = 0
    while nbytes:
        while len(_SHIFT_POW2) <= k:
            square = _SHIFT_POW2[-1]
            _SHIFT_POW2.append([_apply(square, col) for col in square])
        if nbytes & 1:
            op = [_apply(_SHIFT_POW2[k], col) for col in op]
        nbytes >>= 1
        k += 1
    return op


_ROW_WORDS = (16384, 4096, 1024, 256, 64)  # row widths (uint32 words) of the vectorised path, widest first
_MIN_ROWS = 16
_SHIFT_TABLES: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _shift_tables(nbytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Two 65536-entry tables applying the ``nbytes`` zero shift to the low and high 16 bits of a register."""
    tables = _SHIFT_TABLES.get(nbytes)
    if tables is None:
        cols = np.array(_zero_shift(nbytes), dtype=np.uint32)
        x = np.arange(1 << 16, dtype=np.uint32)
        low, high = np.zeros(1 << 16, np.uint32), np.zeros(1 << 16, np.uint32)
        for k in range(16):
            bit = ((x >> np.uint32(k)) & np.uint32(1)).astype(bool)
            low[bit] ^= cols[k]
            high[bit] ^= cols[16 + k]
        tables = _SHIFT_TABLES[nbytes] = (low, high)
    return tables


def _crc_update(reg: int, data: memoryview) -> int:
    """Advance a raw (unconditioned) crc32c register over ``data``.

    The tail of ``data`` is viewed as a [rows, width] matrix of little-endian words. Column i, read top-down, is
    folded with Horner's rule where one step is "shift by one row (4*width zero bytes), xor the next word": that
    is one vectorised table step per row over all columns at once. The columns' accumulators then form a
    4*width-byte string whose CRC (computed the same way, recursively) equals the CRC of the whole matrix, since
    word (r, i) ends up shifted by exactly the bytes that follow it. The head that does not fill a row is
    processed first; the incoming register is xored into the first word (CRC is linear in register and data).
    """
    n = len(data)
    width = next((w for w in _ROW_WORDS if n >= 4 * w * _MIN_ROWS), None)
    if width is None:
        return _crc_bytewise(reg, data)
    rows = n // (4 * width)
    head = n - rows * 4 * width
    reg = _crc_update(reg, data[:head])
    words = np.frombuffer(data[head:], dtype="<u4").reshape(rows, width)
    low, high = _shift_tables(4 * width)
    acc = words[0].copy()
    acc[0] ^= np.uint32(reg)
    lo_idx, hi_idx, lo_val, hi_val = (np.empty_like(acc) for _ in range(4))
    for row in words[1:]:
        np.bitwise_and(acc, np.uint32(0xFFFF), out=lo_idx)
        np.right_shift(acc, np.uint32(16), out=hi_idx)
        # Indices are < 2**16 by construction; "clip" skips the bounds check and the buffering "raise" implies.
        low.take(lo_idx, out=lo_val, mode="clip")
        high.take(hi_idx, out=hi_val, mode="clip")
        np.bitwise_xor(lo_val, hi_val, out=acc)
        acc ^= row
    return _crc_update(0, memoryview(acc.astype("<u4").tobytes()))


def _crc32c_numpy(data) -> int:
    return _crc_update(0xFFFFFFFF, memoryview(data).cast("B")) ^ 0xFFFFFFFF


def _native_crc32c():
    """A compiled crc32c if one happens to be installed (optional; the numpy path is complete on its own)."""
    try:
        import google_crc32c

        if google_crc32c.implementation == "c":  # its pure-Python fallback is slower than ours
            return google_crc32c.value
    except (ImportError, AttributeError):
        pass
    try:
        import crc32c as crc32c_package

        return crc32c_package.crc32c
    except (ImportError, AttributeError):
        return None


_NATIVE = _native_crc32c()


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C (Castagnoli) of ``data``, as LevelDB and TensorFlow compute it."""
    if _NATIVE is not None:
        return _NATIVE(bytes(data))
    return _crc32c_numpy(data)


def mask_crc(crc: int) -> int:
    """LevelDB's crc masking (rotate right by 15, add a constant): stored crcs are always masked."""
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    return mask_crc(crc32c(data))


# ---------------------------------------------------------------------------------------------------------------
# The index: LevelDB table + protobuf values

_FOOTER_SIZE = 48
_TABLE_MAGIC = (0xDB4775248B80FB57).to_bytes(8, "little")
_TRAILER_SIZE = 5  # compression type byte + masked crc32c

# tensorflow/core/framework/types.proto; bfloat16 and strings are decoded specially.
_DTYPES: dict[int, np.dtype | str] = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"), 5: np.dtype("<i2"),
    6: np.dtype("i1"), 7: "string", 8: np.dtype("<c8"), 9: np.dtype("<i8"), 10: np.dtype("?"), 14: "bfloat16",
    17: np.dtype("<u2"), 18: np.dtype("<c16"), 19: np.dtype("<f2"), 22: np.dtype("<u4"), 23: np.dtype("<u8"),
}


class _Corrupt(ValueError):
    """Raised while parsing the index; turned into a ZhclsError naming the file."""


@dataclass(frozen=True)
class TensorInfo:
    """One index entry. ``dtype`` is a numpy dtype, or "bfloat16" / "string" / "DT_<n>" for the others."""

    name: str
    dtype: np.dtype | str
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int  # masked


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Corrupt("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _proto_fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs of a serialized protobuf message; enough of the wire format for bundles."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, pos = int.from_bytes(buf[pos:pos + width], "little"), pos + width
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        else:
            raise _Corrupt(f"unexpected protobuf wire type {wire}")
        if pos > len(buf):
            raise _Corrupt("truncated protobuf message")
        yield field, value


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _parse_shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for field, value in _proto_fields(buf):
        if field == 2:  # Dim {1: size}
            dims.append(next((_signed64(v) for f, v in _proto_fields(value) if f == 1), 0))
        elif field == 3 and value:
            raise _Corrupt("tensor of unknown rank")
    return tuple(dims)


def _parse_entry(name: str, buf: bytes) -> tuple[TensorInfo, bool]:
    """BundleEntryProto -> (info, whether it is a partitioned variable)."""
    fields = {1: 0, 2: b"", 3: 0, 4: 0, 5: 0, 6: 0}
    sliced = False
    for field, value in _proto_fields(buf):
        if field == 7:
            sliced = True
        elif field in fields:
            fields[field] = value
    dtype = _DTYPES.get(fields[1], f"DT_{fields[1]}")
    info = TensorInfo(name, dtype, _parse_shape(fields[2]), fields[3], fields[4], fields[5], fields[6])
    return info, sliced


def _block(index: bytes, handle: bytes) -> bytes:
    """Contents of the block a BlockHandle points at, after checking its trailer."""
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    end = offset + size
    if end + _TRAILER_SIZE > len(index) - _FOOTER_SIZE:
        raise _Corrupt(f"block at {offset}+{size} runs past the end of the file")
    kind, stored = index[end], int.from_bytes(index[end + 1:end + 5], "little")
    if masked_crc32c(index[offset:end + 1]) != stored:
        raise _Corrupt(f"checksum mismatch in the block at offset {offset}")
    if kind != 0:
        raise _Corrupt(f"compressed block (type {kind}); TensorFlow never writes those for checkpoints")
    return index[offset:end]


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs of a table block; keys are prefix-compressed against the previous key."""
    if len(block) < 4:
        raise _Corrupt("block too short")
    num_restarts = int.from_bytes(block[-4:], "little")
    end = len(block) - 4 - 4 * num_restarts
    if end < 0:
        raise _Corrupt("bad restart count in block")
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        if shared > len(key) or pos + non_shared + value_len > end:
            raise _Corrupt("malformed block entry")
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        yield key, block[pos:pos + value_len]
        pos += value_len


def _read_index(index: bytes) -> tuple[int, dict[str, TensorInfo], set[str]]:
    """(num_shards, tensors by name, names of partitioned variables) from the bytes of an .index file."""
    if len(index) < _FOOTER_SIZE or index[-8:] != _TABLE_MAGIC:
        raise _Corrupt("bad footer magic (truncated, or not a TensorFlow checkpoint index)")
    footer = index[-_FOOTER_SIZE:]
    _block(index, footer)  # the metaindex: always empty in bundles, but checksum-verified like the rest
    _, pos = _varint(footer, _varint(footer, 0)[1])
    index_block = _block(index, footer[pos:])
    entries = [entry for _, handle in _block_entries(index_block) for entry in _block_entries(_block(index, handle))]
    if not entries or entries[0][0] != b"":
        raise _Corrupt("no bundle header entry")
    header = dict(_proto_fields(entries[0][1]))
    num_shards = header.get(1, 0)
    if header.get(2, 0) != 0:
        raise _Corrupt("big-endian checkpoint, not supported")
    if num_shards < 1:
        raise _Corrupt(f"bad shard count {num_shards}")
    tensors, sliced = {}, set()
    for key, value in entries[1:]:
        # Keys of partitioned variables' slices are binary; never fail a listing because of them.
        info, is_sliced = _parse_entry(key.decode("utf-8", "backslashreplace"), value)
        if info.shard >= num_shards:
            raise _Corrupt(f"tensor {info.name!r} is in shard {info.shard} of {num_shards}")
        tensors[info.name] = info
        if is_sliced:
            sliced.add(info.name)
    return num_shards, tensors, sliced


def looks_like_index(path: str | Path) -> bool:
    """Cheap test: a file ending with the table magic (does not validate the rest)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            if f.tell() < _FOOTER_SIZE:
                return False
            f.seek(-8, 2)
            return f.read(8) == _TABLE_MAGIC
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------------------------
# Checkpoint


def _find_prefix(path: Path) -> Path:
    """The checkpoint prefix for a folder, a prefix, an .index file or a data shard (never the `checkpoint` file,
    which real CLUE releases fill with ``"."``)."""
    if path.is_dir():
        indexes = sorted(path.glob("*.index"))
        if not indexes:
            raise ZhclsError(f"{path}: no TensorFlow checkpoint here (no *.index file)")
        if len(indexes) > 1:
            names = ", ".join(p.name for p in indexes)
            raise ZhclsError(f"{path}: several checkpoints ({names}); pass the one to use, e.g. {indexes[-1]}")
        return indexes[0].with_suffix("")
    prefix = Path(re.sub(r"(\.index|\.data-\d{5}-of-\d{5})$", "", str(path)))
    if not Path(f"{prefix}.index").is_file():
        others = sorted(p.name for p in prefix.parent.glob("*.index")) if prefix.parent.is_dir() else []
        hint = f" (found: {', '.join(others)})" if others else ""
        raise ZhclsError(f"{prefix}.index: not found, so {prefix.name!r} is not a TensorFlow checkpoint prefix{hint}")
    return prefix


class TFCheckpoint:
    """A TensorFlow 1.x/2.x V2 checkpoint: list tensors from the index alone, read them from the data shards."""

    def __init__(self, path: str | Path) -> None:
        """``path``: a folder holding exactly one ``*.index``, or a prefix, its ``.index`` or one of its shards."""
        self.prefix = _find_prefix(Path(path))
        self.index_path = Path(f"{self.prefix}.index")
        try:
            self.num_shards, self._tensors, self._sliced = _read_index(self.index_path.read_bytes())
        except OSError as e:
            raise ZhclsError(f"{self.index_path}: cannot read ({e.strerror})") from e
        except _Corrupt as e:
            raise ZhclsError(f"{self.index_path}: corrupt checkpoint index: {e}") from e

    def tensors(self) -> dict[str, TensorInfo]:
        """All tensors by name, in the index's (sorted) order. Reads nothing but the index."""
        return dict(self._tensors)

    def data_path(self, shard: int) -> Path:
        return Path(f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}")

    def read(self, name: str) -> np.ndarray:
        """The tensor's value, checksum-verified. bfloat16 is widened to float32; strings give an object array
        of ``bytes``."""
        info = self._tensors.get(name)
        if info is None:
            raise ZhclsError(f"{self.index_path}: no tensor {name!r} in this checkpoint")
        if name in self._sliced:
            raise ZhclsError(f"{self.index_path}: {name!r} is a partitioned variable, which is not supported")
        if isinstance(info.dtype, str) and info.dtype not in ("bfloat16", "string"):
            raise ZhclsError(f"{self.index_path}: tensor {name!r} has unsupported dtype {info.dtype}")
        count = math.prod(info.shape)
        itemsize = 2 if info.dtype == "bfloat16" else getattr(info.dtype, "itemsize", None)
        if itemsize is not None and info.size != count * itemsize:
            raise ZhclsError(f"{self.index_path}: entry {name!r} says {info.size} bytes, its shape "
                             f"{list(info.shape)} needs {count * itemsize}")
        path = self.data_path(info.shard)
        buf = self._read_bytes(path, info)
        if info.dtype == "string":
            return self._decode_strings(path, info, buf, count)
        if masked_crc32c(buf) != info.crc32c:
            raise ZhclsError(f"{path}: checksum mismatch in tensor {name!r} (bytes {info.offset}.."
                             f"{info.offset + info.size}); the file is corrupted")
        if info.dtype == "bfloat16":  # the upper half of a float32
            return (np.frombuffer(buf, "<u2").astype(np.uint32) << 16).view(np.float32).reshape(info.shape)
        return np.frombuffer(buf, info.dtype).reshape(info.shape)

    def _read_bytes(self, path: Path, info: TensorInfo) -> bytearray:
        buf = bytearray(info.size)  # writable, so numpy arrays built on it are writable too
        try:
            with open(path, "rb") as f:
                f.seek(info.offset)
                got = f.readinto(buf)
        except FileNotFoundError:
            raise ZhclsError(f"{path}: data file missing (needed for tensor {info.name!r}); the index alone "
                             f"can list tensors but not read them") from None
        except OSError as e:
            raise ZhclsError(f"{path}: cannot read ({e.strerror})") from e
        if got != info.size:
            raise ZhclsError(f"{path}: file truncated: tensor {info.name!r} needs bytes {info.offset}.."
                             f"{info.offset + info.size}")
        return buf

    @staticmethod
    def _decode_strings(path: Path, info: TensorInfo, buf: bytearray, count: int) -> np.ndarray:
        """Layout: varint64 length per element, masked crc32c of the lengths (as uint32), then the bytes. The
        entry's crc covers the lengths as uint32 LE (not the varints), that crc, and the bytes."""
        corrupt = ZhclsError(f"{path}: checksum mismatch in string tensor {info.name!r} (bytes {info.offset}.."
                             f"{info.offset + info.size}); the file is corrupted")
        lengths, pos = [], 0
        try:
            for _ in range(count):
                length, pos = _varint(buf, pos)
                lengths.append(length)
        except _Corrupt:
            raise corrupt from None
        raw_lengths = np.array(lengths, dtype="<u4").tobytes()
        if (pos + 4 + sum(lengths) != len(buf)
                or buf[pos:pos + 4] != masked_crc32c(raw_lengths).to_bytes(4, "little")
                or masked_crc32c(raw_lengths + buf[pos:]) != info.crc32c):
            raise corrupt
        out = np.empty(count, dtype=object)
        pos += 4
        for i, length in enumerate(lengths):
            out[i] = bytes(buf[pos:pos + length])
            pos += length
        return out.reshape(info.shape)
