"""TensorFlow checkpoint reader (tf_bundle) and converter (tf) against fixtures made by real TensorFlow."""
import ast
import functools
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import flip_byte, writable_copy
from zhcls.errors import ZhclsError
from zhcls.models.formats import tf_bundle
from zhcls.models.formats.tf import convert_tf, is_tf_dir, unused_tensors
from zhcls.models.formats.tf_bundle import TFCheckpoint, crc32c, masked_crc32c

FIXTURES = ("bert_tiny_clue", "bert_tiny_clue_fp16", "bert_tiny_clue_sharded", "electra_tiny", "dtype_zoo")
MODELS = ("bert_tiny_clue", "bert_tiny_clue_fp16", "bert_tiny_clue_sharded", "electra_tiny")
TOL = 1e-5


@pytest.fixture(scope="module")
def tf_dir(shared) -> Path:
    return shared / "fixtures" / "tf"






# --- crc32c -------------------------------------------------------------------------------------------------------


def test_crc32c_known_values():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(b"") == 0
    assert masked_crc32c(b"") == 0xA282EAD8


@pytest.mark.parametrize("n", [0, 1, 3, 4095, 4096, 4099, 65536 * 4 + 7, (1 << 20) + 5])
def test_crc32c_vectorised_path_equals_bytewise(n):
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    expected = tf_bundle._crc_bytewise(0xFFFFFFFF, data) ^ 0xFFFFFFFF
    assert tf_bundle._crc32c_numpy(data) == expected
    assert tf_bundle._crc32c_numpy(memoryview(data)[1:]) == tf_bundle._crc_bytewise(0xFFFFFFFF, data[1:]) ^ 0xFFFFFFFF


# --- reading every fixture tensor ---------------------------------------------------------------------------------


def le_bytes(value: np.ndarray, dtype: str) -> bytes:
    """The bytes the manifest hashes: bfloat16 comes back as float32, so take its upper halves again."""
    if dtype == "bfloat16":
        return (value.view(np.uint32) >> 16).astype("<u2").tobytes()
    return value.tobytes()


@pytest.mark.parametrize("fixture", FIXTURES)
def test_every_tensor_matches_manifest(tf_dir, fixture):
    manifest = json.loads((tf_dir / fixture / "manifest.json").read_text())["tensors"]
    ckpt = TFCheckpoint(tf_dir / fixture)
    infos = ckpt.tensors()
    assert sorted(infos) == sorted(manifest)
    for name, want in manifest.items():
        info, value = infos[name], ckpt.read(name)
        dtype = info.dtype if isinstance(info.dtype, str) else info.dtype.name
        assert (dtype, list(info.shape), list(value.shape)) == (want["dtype"], want["shape"], want["shape"]), name
        if dtype == "string":  # hashed as (8-byte LE length + bytes) per element
            flat = list(value.reshape(-1))
            hashed = b"".join(len(s).to_bytes(8, "little") + s for s in flat)
            assert hashlib.sha256(hashed).hexdigest() == want["sha256_of_len8le_plus_bytes"], name
            assert [s.decode() for s in flat] == want["values_utf8"], name
            continue
        assert hashlib.sha256(le_bytes(value, dtype)).hexdigest() == want["sha256_le_bytes"], name
        # Decoded values too (bf16 -> float32 widening, f16, bool, ints)
        np.testing.assert_array_equal(value.reshape(-1)[:len(want["first"])].astype(np.float64), want["first"])


def test_real_roberta_tiny_clue_index_without_data(shared):
    folder = shared / "vocab" / "roberta-tiny-clue"
    lines = (folder / "tf_checkpoint_tensor_manifest.txt").read_text().splitlines()
    want = [ast.literal_eval(line) for line in lines if line.startswith("(")]
    n_tensors, data_bytes = (int(w) for w in lines[-1].split()[1::2])
    ckpt = TFCheckpoint(folder / "bert_model.ckpt.index")
    infos = ckpt.tensors()
    assert len(infos) == n_tensors == 71
    assert [(i.name, i.dtype.name, list(i.shape), i.size) for i in infos.values()] == [
        (name, "float32", shape, size) for name, _, shape, size in want]
    assert max(i.offset + i.size for i in infos.values()) == sum(i.size for i in infos.values()) == data_bytes
    with pytest.raises(ZhclsError, match=r"bert_model\.ckpt\.data-00000-of-00001: data file missing"):
        ckpt.read("bert/pooler/dense/kernel")
    with pytest.raises(ZhclsError, match="data file missing"):
        convert_tf(folder)
    # Listing what conversion would do needs no data: all 71 map, config from bert_config.json.
    assert unused_tensors(folder) == {"missing": [], "unused": [], "skipped": []}


# --- conversion against the original TF model's outputs -----------------------------------------------------------


@functools.cache
def converted(folder: Path):
    return convert_tf(folder)


def forward(config: dict, state: dict, examples: list[dict], family: str, head: bool = False) -> dict:
    """Outputs named like reference.json, from transformers models loaded strictly with the converted weights."""
    import torch
    import transformers

    cfg = transformers.AutoConfig.for_model(**config)
    if head:  # ELECTRA discriminator: the full ElectraForPreTraining state dict
        model = transformers.ElectraForPreTraining(cfg)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    else:
        model = (transformers.BertModel if family == "bert" else transformers.ElectraModel)(cfg)
        backbone = {k[len(family) + 1:]: torch.from_numpy(v) for k, v in state.items() if k.startswith(family + ".")}
        model.load_state_dict(backbone, strict=True)
    model.eval()
    inputs = {k: torch.tensor([e[k] for e in examples]) for k in ("input_ids", "token_type_ids", "attention_mask")}
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    prefix = "discriminator_" if family == "electra" else ""
    results = []
    for i, e in enumerate(examples):
        n = sum(e["attention_mask"])  # masks are 1s then padding 0s
        seq = out.hidden_states[-1][i]
        if head:
            r = {"discriminator_logits": out.logits[i, :n]}  # given for the unmasked positions only
        else:
            r = {f"{prefix}sequence_output_first2": seq[:2], f"{prefix}sequence_output_masked_mean": seq[:n].mean(0)}
        if family == "bert":
            r["pooled_output"] = out.pooler_output[i]
        results.append({k: v.numpy() for k, v in r.items()})
    return results


def max_diffs(reference: dict, results: list[dict]) -> dict[str, float]:
    diffs: dict[str, float] = {}
    for e, r in zip(reference["examples"], results):
        for key, value in r.items():
            diffs[key] = max(diffs.get(key, 0.0), float(np.abs(np.asarray(e[key]) - value).max()))
    return diffs


@pytest.mark.parametrize("fixture", MODELS)
def test_converted_model_reproduces_tensorflow(tf_dir, fixture):
    config, state = converted(tf_dir / fixture)
    reference = json.loads((tf_dir / fixture / "reference.json").read_text())
    family = config["model_type"]
    assert config["layer_norm_eps"] == 1e-12
    assert config["hidden_act"] == {"bert": "gelu_new", "electra": "gelu"}[family]
    assert all(v.dtype == np.float32 and v.flags.c_contiguous for v in state.values())

    diffs = max_diffs(reference, forward(config, state, reference["examples"], family))
    if family == "electra":
        diffs |= max_diffs(reference, forward(config, state, reference["examples"], family, head=True))
    assert len(diffs) == 3 and max(diffs.values()) < TOL, diffs

    # The GELU choice is not cosmetic: the other form misses the reference by far more than the tolerance.
    wrong = dict(config, hidden_act={"gelu_new": "gelu", "gelu": "gelu_new"}[config["hidden_act"]])
    wrong_diffs = max_diffs(reference, forward(wrong, state, reference["examples"], family))
    assert max(wrong_diffs.values()) > 10 * TOL, wrong_diffs


def test_config_and_report(tf_dir):
    config, state = converted(tf_dir / "bert_tiny_clue")
    assert not any(k.startswith("pooler_") or k == "directionality" for k in config)
    assert config["architectures"] == ["BertModel"] and len(state) == 39
    report = unused_tensors(tf_dir / "bert_tiny_clue")
    assert report["missing"] == report["unused"] == [] and len(report["skipped"]) == 2 * 39 + 1

    sharded = unused_tensors(tf_dir / "bert_tiny_clue_sharded")["skipped"]
    assert sorted(sharded) == sorted(n for n in TFCheckpoint(tf_dir / "bert_tiny_clue_sharded").tensors()
                                     if n.startswith("cls/") or n == "global_step")

    config, state = converted(tf_dir / "electra_tiny")
    assert config["embedding_size"] == 32 and config["architectures"] == ["ElectraForPreTraining"]
    assert state["discriminator_predictions.dense_prediction.weight"].shape == (1, 64)
    skipped = unused_tensors(tf_dir / "electra_tiny")["skipped"]
    assert all(n == "global_step" or n.startswith("generator") for n in skipped) and len(skipped) == 40


def test_electra_with_generator_config_is_rejected(tf_dir):
    folder = tf_dir / "electra_tiny"
    with pytest.raises(ZhclsError, match=r"tiny_generator_config\.json: hidden_size=16 but the checkpoint has 64"):
        convert_tf(folder, folder / "tiny_generator_config.json")


# --- fine-tuned heads, via a minimal bundle writer ----------------------------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def write_bundle(prefix: Path, tensors: dict[str, np.ndarray], entries_per_block: int = 16) -> None:
    """A float32, single-shard V2 bundle as TensorFlow lays it out, cut into several data blocks."""
    data, entries = bytearray(), [(b"", b"\x08\x01\x1a\x02\x08\x01")]  # header: num_shards=1, producer=1
    for name in sorted(tensors):
        raw = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        dims = b"".join(b"\x12" + varint(len(d)) + d for d in (b"\x08" + varint(s) for s in tensors[name].shape))
        entry = (b"\x08\x01" + b"\x12" + varint(len(dims)) + dims + b"\x20" + varint(len(data))
                 + b"\x28" + varint(len(raw)) + b"\x35" + masked_crc32c(raw).to_bytes(4, "little"))
        entries.append((name.encode(), entry))
        data += raw
    index = bytearray()

    def block(items: list[tuple[bytes, bytes]]) -> bytes:
        body = b"".join(varint(0) + varint(len(k)) + varint(len(v)) + k + v for k, v in items)
        body += (0).to_bytes(4, "little") + (1).to_bytes(4, "little")  # one restart, at 0
        handle = varint(len(index)) + varint(len(body))
        index.extend(body + b"\x00" + masked_crc32c(body + b"\x00").to_bytes(4, "little"))
        return handle

    chunks = [entries[i:i + entries_per_block] for i in range(0, len(entries), entries_per_block)]
    index_entries = [(chunk[-1][0] + b"\xff", block(chunk)) for chunk in chunks]
    handles = block([]) + block(index_entries)
    index.extend(handles.ljust(40, b"\x00") + (0xDB4775248B80FB57).to_bytes(8, "little"))
    Path(f"{prefix}.index").write_bytes(bytes(index))
    Path(f"{prefix}.data-00000-of-00001").write_bytes(bytes(data))


def model_tensors(tf_dir: Path, fixture: str, scope: str) -> dict[str, np.ndarray]:
    ckpt = TFCheckpoint(tf_dir / fixture)
    return {n: ckpt.read(n) for n in ckpt.tensors() if n.startswith(scope) and not n.endswith(("adam_m", "adam_v"))}


def test_bert_run_classifier_head(tf_dir, tmp_path):
    rng = np.random.default_rng(0)
    weights, bias = rng.normal(size=(3, 64)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    tensors = model_tensors(tf_dir, "bert_tiny_clue", "bert/") | {"output_weights": weights, "output_bias": bias}
    write_bundle(tmp_path / "model.ckpt", tensors)
    shutil.copy(tf_dir / "bert_tiny_clue" / "bert_config.json", tmp_path)
    assert len(tf_bundle._read_index((tmp_path / "model.ckpt.index").read_bytes())[1]) == 41  # several blocks

    config, state = convert_tf(tmp_path)
    assert config["num_labels"] == 3 and config["architectures"] == ["BertForSequenceClassification"]
    import torch
    import transformers

    model = transformers.BertForSequenceClassification(transformers.AutoConfig.for_model(**config)).eval()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    reference = json.loads((tf_dir / "bert_tiny_clue" / "reference.json").read_text())["examples"]
    inputs = {k: torch.tensor([e[k] for e in reference]) for k in ("input_ids", "token_type_ids", "attention_mask")}
    with torch.no_grad():
        logits = model(**inputs).logits.numpy()
    expected = np.array([e["pooled_output"] for e in reference]) @ weights.T + bias  # run_classifier's logits
    assert np.abs(logits - expected).max() < TOL


def test_electra_finetuning_head_is_linear(tf_dir, tmp_path):
    rng = np.random.default_rng(1)
    kernel, bias = rng.normal(size=(64, 2)).astype(np.float32), rng.normal(size=2).astype(np.float32)
    tensors = model_tensors(tf_dir, "electra_tiny", "electra/") | {
        "task_specific/chnsenticorp/dense/kernel": kernel, "task_specific/chnsenticorp/dense/bias": bias}
    write_bundle(tmp_path / "electra_small", tensors, entries_per_block=7)
    shutil.copy(tf_dir / "electra_tiny" / "tiny_discriminator_config.json", tmp_path)

    config, state = convert_tf(tmp_path)
    assert config["classifier_type"] == "linear" and config["num_labels"] == 2
    assert not any(k.startswith("classifier.dense") for k in state)
    np.testing.assert_array_equal(state["classifier.out_proj.weight"], kernel.T)
    np.testing.assert_array_equal(state["classifier.out_proj.bias"], bias)
    assert unused_tensors(tmp_path) == {"missing": [], "unused": [], "skipped": []}


# --- damaged or wrong input ---------------------------------------------------------------------------------------


def test_every_flipped_index_byte_is_detected(tf_dir, tmp_path):
    folder = writable_copy(tf_dir / "bert_tiny_clue_sharded", tmp_path / "bert_tiny_clue_sharded")
    index = folder / "bert_model.ckpt.index"
    original = index.read_bytes()
    # Every 5th byte of the blocks and their trailers (crc32c catches any single flip; a stride of 5 still hits
    # every 5-byte trailer), the first footer byte (a handle) and the magic; not the footer's zero padding.
    positions = [*range(0, len(original) - 48, 5), len(original) - 48, *range(len(original) - 8, len(original))]
    for pos in positions:
        damaged = bytearray(original)
        damaged[pos] ^= 0xFF
        index.write_bytes(bytes(damaged))
        with pytest.raises(ZhclsError, match=r"bert_model\.ckpt\.index: corrupt checkpoint index"):
            TFCheckpoint(folder)
    index.write_bytes(original[:-100])
    with pytest.raises(ZhclsError, match="corrupt checkpoint index: bad footer magic .truncated"):
        TFCheckpoint(folder)


def test_flipped_data_byte_missing_and_truncated_shards(tf_dir, tmp_path):
    folder = writable_copy(tf_dir / "bert_tiny_clue_sharded", tmp_path / "bert_tiny_clue_sharded")
    ckpt = TFCheckpoint(folder)
    info = ckpt.tensors()["bert/embeddings/word_embeddings"]
    shard1 = folder / "bert_model.ckpt.data-00001-of-00002"
    flip_byte(shard1, info.offset + info.size // 2)
    with pytest.raises(ZhclsError, match=r"data-00001-of-00002: checksum mismatch in tensor 'bert/embeddings/word_"):
        ckpt.read("bert/embeddings/word_embeddings")
    ckpt.read("bert/embeddings/position_embeddings")  # the rest of the shard is intact

    shard1.write_bytes(shard1.read_bytes()[:info.offset + 10])
    with pytest.raises(ZhclsError, match=r"data-00001-of-00002: file truncated"):
        ckpt.read("bert/embeddings/word_embeddings")

    shard1.unlink()
    assert len(TFCheckpoint(folder).tensors()) == 47  # listing needs only the index
    ckpt.read("bert/pooler/dense/kernel")  # shard 0 is still there
    with pytest.raises(ZhclsError, match=r"data-00001-of-00002: data file missing"):
        ckpt.read("bert/embeddings/word_embeddings")


def test_wrong_paths(tf_dir, tmp_path):
    folder = tf_dir / "bert_tiny_clue"
    with pytest.raises(ZhclsError, match=r"bert_model\.index: not found.*found: bert_model\.ckpt\.index"):
        TFCheckpoint(folder / "bert_model")
    with pytest.raises(ZhclsError, match="no TensorFlow checkpoint here"):
        TFCheckpoint(tmp_path)
    with pytest.raises(ZhclsError, match="no tensor 'bert/nope'"):
        TFCheckpoint(folder / "bert_model.ckpt").read("bert/nope")
    for name in ("a.index", "b.index"):
        shutil.copy(folder / "bert_model.ckpt.index", tmp_path / name)
    with pytest.raises(ZhclsError, match=r"several checkpoints \(a\.index, b\.index\)"):
        TFCheckpoint(tmp_path)
    # The explicit prefix, .index and data-shard spellings all work; `checkpoint` files are never consulted.
    for spelling in ("bert_model.ckpt", "bert_model.ckpt.index", "bert_model.ckpt.data-00000-of-00001"):
        assert TFCheckpoint(folder / spelling).prefix == folder / "bert_model.ckpt"
    assert is_tf_dir(folder) and not is_tf_dir(tmp_path / "a.index") and not is_tf_dir(tf_dir)
