"""`zhcls convert` / `inspect` / cached conversion, checked against outputs of the ORIGINAL code (TensorFlow
modeling.py for the TF fixtures, PaddleNLP for the Paddle ones) through BOTH transformers and zhcls loading
the converted folder."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import flip_byte, writable_copy
from zhcls.errors import ZhclsError
from zhcls.models import checkpoint
from zhcls.models.cache import cache_root, cached_conversion
from zhcls.models.convert import convert
from zhcls.models.formats.tf_bundle import TFCheckpoint
from zhcls.models.inspection import format_inspect, inspect

TF_TOL = 1e-5  # the TF fixtures' README
PADDLE_TOL = 1e-4  # the Paddle fixtures' README

pytestmark = pytest.mark.usefixtures("one_thread")




@pytest.fixture(scope="module")
def tf_dir(shared) -> Path:
    return shared / "fixtures" / "tf"


@pytest.fixture(scope="module")
def converted(shared, tf_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("converted")
    sources = {"bert_tiny_clue": tf_dir / "bert_tiny_clue", "electra_tiny": tf_dir / "electra_tiny",
               "ernie_tiny_h64_l2": shared / "fixtures" / "paddle" / "ernie_tiny_h64_l2"}
    return {name: convert(src, root / name) for name, src in sources.items()}






# --- outputs named like the TF fixtures' reference.json (same approach as test_tf_checkpoint.forward) ----------


def batch(examples: list[dict]) -> dict[str, torch.Tensor]:
    return {k: torch.tensor([e[k] for e in examples]) for k in ("input_ids", "token_type_ids", "attention_mask")}


def named_outputs(examples, family: str, hidden, pooled=None, disc_logits=None) -> list[dict]:
    prefix = "discriminator_" if family == "electra" else ""
    results = []
    for i, e in enumerate(examples):
        n = sum(e["attention_mask"])  # 1s then padding 0s
        r = {f"{prefix}sequence_output_first2": hidden[i, :2],
             f"{prefix}sequence_output_masked_mean": hidden[i, :n].mean(0)}
        if pooled is not None:
            r["pooled_output"] = pooled[i]
        if disc_logits is not None:
            r["discriminator_logits"] = disc_logits[i, :n]  # given for the unmasked positions only
        results.append({k: v.detach().numpy() for k, v in r.items()})
    return results


def max_diffs(examples: list[dict], results: list[dict]) -> dict[str, float]:
    diffs: dict[str, float] = {}
    for e, r in zip(examples, results):
        for key, value in r.items():
            diffs[key] = max(diffs.get(key, 0.0), float(np.abs(np.asarray(e[key]) - value).max()))
    return diffs


# --- TF -> folder -> transformers and zhcls ----------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["bert_tiny_clue", "electra_tiny"])
def test_converted_tf_folder_reproduces_tensorflow_in_transformers_and_zhcls(tf_dir, converted, fixture):
    import transformers

    folder = converted[fixture]
    examples = json.loads((tf_dir / fixture / "reference.json").read_text(encoding="utf-8"))["examples"]
    inputs = batch(examples)
    family = json.loads((folder / "config.json").read_text())["model_type"]
    assert sorted(p.name for p in folder.iterdir()) == [".zhcls.json", "config.json", "model.safetensors", "special_tokens_map.json",
                                                         "tokenizer_config.json", "vocab.txt"]

    # transformers, the class config.json names, loaded with nothing missing or left over
    arch = {"bert": transformers.BertModel, "electra": transformers.ElectraForPreTraining}[family]
    model, loading = arch.from_pretrained(folder, output_loading_info=True)
    assert type(model).__name__ == json.loads((folder / "config.json").read_text())["architectures"][0]
    assert not any(loading.values()), loading
    with torch.no_grad():
        out = model.eval()(**inputs, output_hidden_states=True)
    if family == "bert":
        hf = named_outputs(examples, family, out.last_hidden_state, pooled=out.pooler_output)
    else:
        hf = named_outputs(examples, family, out.hidden_states[-1], disc_logits=out.logits)
    hf_diffs = max_diffs(examples, hf)

    # zhcls, through the same reader `load_checkpoint` uses
    config, state = checkpoint.read_source(folder)
    zh_model = checkpoint.build_model(config, None, state).eval()
    with torch.no_grad():
        hidden, pooled = zh_model.backbone(**inputs)
    zh_diffs = max_diffs(examples, named_outputs(examples, family, hidden, pooled if family == "bert" else None))

    print(f"{fixture}: transformers {hf_diffs}, zhcls {zh_diffs}")
    assert len(hf_diffs) == 3 and max(hf_diffs.values()) < TF_TOL, hf_diffs
    assert len(zh_diffs) == 2 + (family == "bert") and max(zh_diffs.values()) < TF_TOL, zh_diffs

    # The tokenizer files: transformers' tokenizer gives the reference ids (this text's traditional characters are
    # [UNK] in the CLUE vocab, as the original tokenizer made them).
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    e = next(e for e in examples if e["text_b"] is None)
    n = sum(e["attention_mask"])
    assert tokenizer(e["text_a"], truncation=True, max_length=64)["input_ids"] == e["input_ids"][:n]


def test_backbone_folder_takes_a_fresh_head_in_transformers(converted):
    import transformers

    model, loading = transformers.AutoModelForSequenceClassification.from_pretrained(
        converted["bert_tiny_clue"], num_labels=3, output_loading_info=True)
    assert type(model).__name__ == "BertForSequenceClassification"
    assert set(loading["missing_keys"]) == {"classifier.weight", "classifier.bias"}
    assert not loading["unexpected_keys"] and not loading["mismatched_keys"]


# --- Paddle -> folder -> transformers AutoModelForSequenceClassification ------------------------------------------


def test_converted_paddle_ernie_reproduces_paddlenlp(shared, converted):
    import transformers

    folder = converted["ernie_tiny_h64_l2"]
    reference = json.loads((shared / "fixtures/paddle/ernie_tiny_h64_l2/reference.json").read_text(encoding="utf-8"))
    model, loading = transformers.AutoModelForSequenceClassification.from_pretrained(folder, output_loading_info=True)
    assert type(model).__name__ == "ErnieForSequenceClassification" and not any(loading.values()), loading
    zh_model, _, _ = checkpoint.load_checkpoint(folder)
    examples = reference["examples"]
    diffs = {"transformers": 0.0, "zhcls": 0.0}
    with torch.no_grad():
        for e in examples:  # unpadded batches of 1, no attention mask, as PaddleNLP was called
            ids, types = torch.tensor([e["input_ids"]]), torch.tensor([e["token_type_ids"]])
            diffs["transformers"] = max(diffs["transformers"], float(np.abs(
                model.eval()(input_ids=ids, token_type_ids=types).logits[0].numpy() - e["logits"]).max()))
            diffs["zhcls"] = max(diffs["zhcls"], float(np.abs(zh_model(ids, types)[0].numpy() - e["logits"]).max()))
        length = reference["batch_padded_len"]
        ids = torch.tensor([e["input_ids"] + [0] * (length - len(e["input_ids"])) for e in examples])
        types = torch.tensor([e["token_type_ids"] + [0] * (length - len(e["token_type_ids"])) for e in examples])
        logits = model(input_ids=ids, token_type_ids=types, attention_mask=(ids != 0).long()).logits.numpy()
        diffs["transformers_batch"] = float(np.abs(logits - reference["batch_padded_logits"]).max())
    print(f"ernie_tiny_h64_l2 logits vs PaddleNLP: {diffs}")
    assert max(diffs.values()) < PADDLE_TOL, diffs
    assert (folder / "label.txt").read_text().split() == [f"LABEL_{i}" for i in range(5)]


# --- inspect ------------------------------------------------------------------------------------------------------


def test_inspect_real_roberta_tiny_clue_index_without_data(shared, tmp_path):
    folder = shared / "vocab" / "roberta-tiny-clue"
    data_bytes = int((folder / "tf_checkpoint_tensor_manifest.txt").read_text().splitlines()[-1].split()[3])
    info = inspect(folder)
    arch = info["architecture"]
    assert info["format"] == "tf" and info["tensors"] == info["model_tensors"] == 71
    assert (arch["model_type"], arch["layers"], arch["hidden"], arch["heads"], arch["ffn"], arch["vocab"],
            arch["embedding_size"]) == ("bert", 4, 312, 12, 1248, 8021, 312)
    assert info["parameters"] == info["stored_values"] == data_bytes // 4 == 7_449_936  # all float32, all kept
    assert info["missing"] == info["unused"] == info["skipped"] == []
    assert info["vocab"]["tokens"] == 8021
    assert len(info["problems"]) == 1 and "data-00000-of-00001: missing" in info["problems"][0]
    text = format_inspect(info)
    assert "4 layers, hidden 312, 12 heads, FFN 1248, vocab 8021" in text and "7,449,936" in text
    # Conversion needs the data: a clear error, nothing written.
    with pytest.raises(ZhclsError, match="data file missing"):
        convert(folder, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_inspect_lists_skipped_optimizer_slots_heads_and_generator(shared, tf_dir, converted):
    bert = inspect(tf_dir / "bert_tiny_clue")
    assert bert["tensors"] == 118 and bert["model_tensors"] == 39 and bert["problems"] == []
    assert bert["unused"] == bert["missing"] == []
    names = [n for n in TFCheckpoint(tf_dir / "bert_tiny_clue").tensors() if n.startswith("bert/") and "adam" not in n]
    assert sorted(bert["skipped"]) == sorted(["global_step"] + [f"{n}/adam_{s}" for n in names for s in "mv"])
    assert "skipped     79: */adam_m (39), */adam_v (39), global_step" in format_inspect(bert)

    sharded = inspect(tf_dir / "bert_tiny_clue_sharded")
    assert sorted(sharded["skipped"]) == sorted(n for n in TFCheckpoint(tf_dir / "bert_tiny_clue_sharded").tensors()
                                                if n.startswith("cls/") or n == "global_step")
    assert sharded["parameters"] == bert["parameters"]

    electra = inspect(tf_dir / "electra_tiny")
    assert electra["architecture"]["embedding_size"] == 32
    assert electra["architecture"]["architecture"] == "ElectraForPreTraining"
    assert len(electra["skipped"]) == 40
    assert all(n == "global_step" or n.startswith("generator") for n in electra["skipped"])
    assert "generator/* (34), generator_predictions/* (5), global_step" in format_inspect(electra)

    # The converted folders hold exactly what inspect said conversion keeps (safetensors header only).
    for name, source in (("bert_tiny_clue", bert), ("electra_tiny", electra)):
        hf = inspect(converted[name])
        assert hf["format"] == "hf" and hf["dtypes"] == {"float32": source["model_tensors"]}
        assert (hf["parameters"], hf["tensors"]) == (source["parameters"], source["model_tensors"])
        assert hf["architecture"] == source["architecture"] and hf["problems"] == hf["skipped"] == []

    ernie = inspect(shared / "fixtures/paddle/ernie_tiny_h64_l2")
    assert ernie["format"] == "paddle" and ernie["architecture"]["num_labels"] == 5 and ernie["problems"] == []
    assert ernie["parameters"] == inspect(converted["ernie_tiny_h64_l2"])["parameters"]
    assert "no vocab.txt" in inspect(tf_dir / "dtype_zoo")["problems"][-1]  # not a model: reported, not raised


# --- errors -------------------------------------------------------------------------------------------------------


def test_flipped_data_byte_fails_and_writes_nothing(tf_dir, tmp_path):
    src = writable_copy(tf_dir / "bert_tiny_clue", tmp_path / "src")
    info = TFCheckpoint(src).tensors()["bert/encoder/layer_1/output/dense/kernel"]
    flip_byte(src / "bert_model.ckpt.data-00000-of-00001", info.offset + info.size // 3)
    out = tmp_path / "out"
    with pytest.raises(ZhclsError, match=r"checksum mismatch in tensor 'bert/encoder/layer_1/output/dense/kernel'"):
        convert(src, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no dst, no temporary folder left
    # An earlier conversion at dst survives a failed one untouched.
    convert(tf_dir / "bert_tiny_clue", out)
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(ZhclsError, match="checksum mismatch"):
        convert(src, out)
    assert (out / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


def test_wrong_format_vocab_and_destination(shared, tf_dir, tmp_path):
    bert = tf_dir / "bert_tiny_clue"
    with pytest.raises(ZhclsError, match=r"--from paddle: .* holds a TensorFlow 1.x checkpoint.*--from tf"):
        convert(bert, tmp_path / "a", from_format="paddle")
    with pytest.raises(ZhclsError, match="--from onnx: expected one of auto, hf, paddle, tf"):
        convert(bert, tmp_path / "a", from_format="onnx")
    with pytest.raises(ZhclsError, match="no weights found"):
        convert(tmp_path, tmp_path / "a")
    # Explicit --from tf, and a prefix instead of the folder, both work.
    assert (convert(bert / "bert_model.ckpt", tmp_path / "a", from_format="tf") / "model.safetensors").is_file()

    src = writable_copy(bert, tmp_path / "novocab")
    (src / "vocab.txt").unlink()
    with pytest.raises(ZhclsError, match=r"novocab: no vocab.txt beside the weights; pass the vocabulary"):
        convert(src, tmp_path / "b")
    with pytest.raises(ZhclsError, match="21128 tokens but the model embeds only 8021"):
        convert(src, tmp_path / "b", vocab_file=tf_dir / "electra_tiny" / "vocab.txt")
    convert(src, tmp_path / "b", vocab_file=bert / "vocab.txt")
    assert (tmp_path / "b" / "vocab.txt").read_text().split() == (bert / "vocab.txt").read_text().split()

    # The destination is replaced whole: never the source, its parent, or a folder that is not a conversion.
    for dst in (src, tmp_path):
        with pytest.raises(ZhclsError, match="--to .*: must not be .* or hold it"):
            convert(src, dst, vocab_file=bert / "vocab.txt")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ZhclsError, match="--to .*mine: holds files zhcls did not write .* pass --overwrite"):
        convert(bert, foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert (convert(bert, foreign, overwrite=True) / "model.safetensors").is_file()  # the user said so
    with pytest.raises(ZhclsError, match="--config applies to TensorFlow checkpoints only"):
        convert(shared / "fixtures/paddle/ernie_tiny_h64_l2", tmp_path / "c", config_path=bert / "bert_config.json")


# --- cached conversion (for --model) ------------------------------------------------------------------------------


def test_cached_conversion_is_reused_until_the_source_changes(tf_dir, converted, tmp_path, monkeypatch):
    src = writable_copy(tf_dir / "bert_tiny_clue", tmp_path / "clue")
    cache = tmp_path / "cache"
    first = cached_conversion(src, cache)
    assert first.parent == cache and first.name.startswith("clue-")
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert cached_conversion(src, cache) == first and (first / "model.safetensors").stat().st_mtime_ns == stamp
    assert cached_conversion(converted["bert_tiny_clue"], cache) == converted["bert_tiny_clue"]  # HF: as it is

    # Same weights as reading the TF folder directly (what load_pretrained does today).
    (config, state), (cached_config, cached_state) = checkpoint.read_source(src), checkpoint.read_source(first)
    direct = checkpoint.build_model(config, ["a", "b"], state).state_dict()
    cached = checkpoint.build_model(cached_config, ["a", "b"], cached_state).state_dict()
    assert direct.keys() == cached.keys()
    assert all(torch.equal(direct[k], cached[k]) for k in direct if not k.startswith("classifier."))

    os.utime(src / "bert_config.json", ns=(stamp, stamp + 10**9))  # a changed file: a new entry, the old one goes
    second = cached_conversion(src, cache)
    assert second != first and not first.exists() and [p.name for p in cache.iterdir()] == [second.name]

    blocked = tmp_path / "a_file"
    blocked.write_text("")
    fallback = cached_conversion(src, blocked / "cache")  # an unwritable cache: a temporary folder, with a warning
    assert fallback.parent != blocked and (fallback / "model.safetensors").is_file()

    monkeypatch.setenv("ZHCLS_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env" / "converted"
    assert cached_conversion(src).parent == tmp_path / "env" / "converted"
    monkeypatch.delenv("ZHCLS_CACHE")
    assert cache_root() == Path.home() / ".cache" / "zhcls" / "converted"


# --- a fine-tune on a converted checkpoint ------------------------------------------------------------------------


def test_finetune_evaluate_export_a_converted_checkpoint(shared, converted, tmp_path):
    import zhcls
    from zhcls.evaluation import evaluate

    data = tmp_path / "kuake"
    data.mkdir()
    source = shared / "data" / "kuake_qic"
    shutil.copy(source / "label.txt", data / "label.txt")
    for name, n in (("train.txt", 480), ("dev.txt", 120)):
        lines = (source / name).read_text(encoding="utf-8").splitlines()[:n]
        (data / name).write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = zhcls.train(dataset_dir=str(data), model_name=str(converted["bert_tiny_clue"]),
                         save_dir=str(tmp_path / "ckpt"), epochs=1, max_steps=30, batch_size=16, max_seq_length=64,
                         learning_rate=1e-3, progress=False)
    assert result.global_step == 30 and result.best_epoch == 1
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text(encoding="utf-8"))
    assert config["vocab_size"] == 8021 and config["zhcls"]["converted_from"]["format"] == "tf"
    report = evaluate(tmp_path / "ckpt", data, splits=("dev",), plot=False, progress=False)
    assert report["dev"]["accuracy"] == pytest.approx(result.best_score, abs=1e-9)

    export = pytest.importorskip("zhcls.deploy.export")
    exported = export.export(tmp_path / "ckpt", tmp_path / "onnx", dataset_dir=data, progress=False)
    assert exported["plain"]["max_abs_diff"] <= exported["plain"]["tolerance"]
    assert (tmp_path / "onnx" / "model.onnx").is_file()
    fused = exported.get("fused", {}).get("max_abs_diff", float("nan"))
    print(f"fine-tune: {result.global_step} steps, dev accuracy {result.best_score:.4f}; ONNX vs PyTorch "
          f"{exported['plain']['max_abs_diff']:.1e} plain, {fused:.1e} fused")
