"""Compression: head / neuron importance, width pruning, distillation, vocabulary pruning.

The unit tests use random weights; the end-to-end ones a tiny classifier (2 layers x 64, 4 heads)
trained here on a real KUAKE-QIC subset, pruned, distilled, exported and loaded back.
"""
import json
from fractions import Fraction

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import zhcls
from helpers import subset
from test_cli import assert_one_line_error, zhcls_cli
from zhcls.compress.distill import distill, layer_map
from zhcls.compress.importance import importance_scores
from zhcls.compress.prune import PruneConfig, prune
from zhcls.compress.vocab import prune_vocab
from zhcls.compress.width import parse_width, prune_width
from zhcls.errors import ZhclsError
from zhcls.models.modeling import EncoderConfig, SequenceClassifier

SHAPE = dict(model_type="bert", vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=128, id2label={0: "a", 1: "b", 2: "c"})


def random_batches(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(1, 300, (8, 12), generator=g)
        mask = torch.ones_like(ids)
        mask[:4, 9:] = 0
        out.append(({"input_ids": ids * mask, "token_type_ids": torch.zeros_like(ids), "attention_mask": mask},
                    torch.randint(0, 3, (8,), generator=g)))
    return out


def masked_logits(model, heads_kept, neurons_kept, inputs):
    """The full model with every other head and FFN neuron switched off (their output weights zeroed)."""
    masked = SequenceClassifier(model.config).eval()
    masked.load_state_dict(model.state_dict())
    d = model.config.head_size
    with torch.no_grad():
        for layer, heads, neurons in zip(masked.backbone.encoder.layer, heads_kept, neurons_kept):
            drop = torch.ones(layer.attention.output.dense.in_features, dtype=torch.bool)
            for h in heads:
                drop[h * d:(h + 1) * d] = False
            layer.attention.output.dense.weight[:, drop] = 0
            drop = torch.ones(layer.output.dense.in_features, dtype=torch.bool)
            drop[neurons] = False
            layer.output.dense.weight[:, drop] = 0
        return masked(**inputs)


def test_zeroed_head_and_neuron_rank_least_important():
    torch.manual_seed(0)
    model = SequenceClassifier(EncoderConfig(**SHAPE))
    with torch.no_grad():
        model.bert.encoder.layer[0].attention.output.dense.weight[:, 2 * 16:3 * 16] = 0  # head 2 of layer 0
        model.bert.encoder.layer[1].output.dense.weight[:, 7] = 0  # FFN neuron 7 of layer 1
    heads, neurons = importance_scores(model, random_batches())
    assert [h.shape[0] for h in heads] == [4, 4] and [n.shape[0] for n in neurons] == [128, 128]
    assert heads[0].argmin() == 2 and heads[0][2] == 0 and (heads[0][[0, 1, 3]] > 0).all()
    assert neurons[1].argmin() == 7 and neurons[1][7] == 0 and (heads[1] > 0).all()
    assert all(p.grad is None for p in model.parameters())


def test_width_one_changes_no_logit_and_pruned_equals_masked():
    torch.manual_seed(1)
    model = SequenceClassifier(EncoderConfig(**SHAPE)).eval()
    heads, neurons = importance_scores(model, random_batches())
    inputs = random_batches(1, seed=5)[0][0]
    with torch.no_grad():
        full = model(**inputs)
        assert torch.equal(prune_width(model, Fraction(1), heads, neurons).eval()(**inputs), full)
        half = prune_width(model, Fraction(1, 2), heads, neurons).eval()
        assert half.config.layer_num_heads == [2, 2] and half.config.layer_intermediate_sizes == [64, 64]
        kept_heads = [torch.topk(h, 2).indices for h in heads]
        kept_neurons = [torch.topk(n, 64).indices for n in neurons]
        diff = (half(**inputs) - masked_logits(model, kept_heads, kept_neurons, inputs)).abs().max()
    assert diff <= 1e-5, diff
    assert half.num_parameters() < model.num_parameters()
    # An ordinary model: its config rebuilds it and its state dict loads strictly.
    rebuilt = SequenceClassifier(EncoderConfig.from_dict(half.config.to_dict()))
    rebuilt.load_state_dict(half.state_dict(), strict=True)


def test_hidden_states_match_transformers_and_leave_logits_alone():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(2)
    config = EncoderConfig(**SHAPE)
    ours = SequenceClassifier(config).eval()
    hf_config = transformers.AutoConfig.for_model(**{k: v for k, v in config.to_dict().items() if k != "model_type"},
                                                  model_type="bert")
    theirs = transformers.AutoModelForSequenceClassification.from_config(hf_config).eval()
    theirs.load_state_dict(ours.state_dict(), strict=False)
    inputs = random_batches(1)[0][0]
    with torch.no_grad():
        logits, states = ours(**inputs, output_hidden_states=True)
        reference = theirs(**inputs, output_hidden_states=True)
        assert torch.equal(logits, ours(**inputs))
    assert len(states) == len(reference.hidden_states) == 3
    assert max((a - b).abs().max() for a, b in zip(states, reference.hidden_states)) <= 1e-5


def test_widths_must_keep_whole_heads():
    assert [parse_width(w, 12) for w in ("3/4", "2/3", "0.5", "0.67", "1")] == [Fraction(3, 4), Fraction(2, 3),
                                                                               Fraction(1, 2), Fraction(2, 3), 1]
    assert parse_width("0.75", 16) == Fraction(3, 4)
    with pytest.raises(ZhclsError, match="2/3 keeps 10.6667 of 16 attention heads.*3/4 1/2"):
        parse_width("2/3", 16)
    for bad in ("0.7", "0", "1.5", "three"):
        with pytest.raises(ZhclsError, match="--width_mult_list"):
            parse_width(bad, 12)
    assert layer_map(2, 6) == [0, 3, 6] and layer_map(4, 12) == [0, 3, 6, 9, 12]


# -- end to end, on a real KUAKE-QIC subset ---------------------------------------------------------------

@pytest.fixture(scope="module")
def kq(shared, tmp_path_factory):
    return subset(shared / "data/kuake_qic", tmp_path_factory.mktemp("kq"), n_train=480, n_dev=160)


@pytest.fixture(scope="module")
def arch(tmp_path_factory):
    """Architecture folders for --init_random: the teacher's (4 heads) and a narrower student's."""
    root = tmp_path_factory.mktemp("arch")
    for name, hidden, heads, ffn in (("teacher", 64, 4, 128), ("student", 32, 2, 64)):
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps(
            {"model_type": "bert", "hidden_size": hidden, "num_hidden_layers": 2, "num_attention_heads": heads,
             "intermediate_size": ffn, "max_position_embeddings": 64}))
    return root


@pytest.fixture(scope="module")
def teacher(kq, arch, shared, tmp_path_factory, one_thread):
    save_dir = tmp_path_factory.mktemp("teacher") / "ckpt"
    zhcls.train(dataset_dir=str(kq), model_name=str(arch / "teacher"), init_random=True, save_dir=str(save_dir),
                epochs=2, learning_rate=2e-3, max_seq_length=48, progress=False, threads=1,
                vocab_file=str(shared / "vocab/bert-base-chinese/vocab.txt"))
    return save_dir


def dev_accuracy(path, kq):
    lines = [line.split("\t") for line in (kq / "dev.txt").read_text(encoding="utf-8").splitlines()]
    results = zhcls.load(path).predict([text for text, _ in lines])
    return float(np.mean([r["label"] == label for r, (_, label) in zip(results, lines)]))


def quick_prune(teacher, kq, out, **kw):
    args = dict(params_dir=str(teacher), dataset_dir=str(kq), output_dir=str(out), width_mult_list=["3/4", "1/2"],
                epochs=2, learning_rate=1e-3, max_seq_length=48, threads=1, progress=False, bench=False)
    return prune(PruneConfig(**{**args, **kw}))


@pytest.mark.slow
def test_prune_end_to_end(teacher, kq, tmp_path):
    from zhcls.deploy.export import export

    report = quick_prune(teacher, kq, tmp_path / "prune")
    rows = {r["width_mult"]: r for r in report["widths"]}
    assert list(rows) == ["1", "3/4", "1/2"]
    assert rows["1"]["dev_accuracy"] == pytest.approx(dev_accuracy(teacher, kq))
    for width, heads, ffn in (("3/4", 3, 96), ("1/2", 2, 64)):
        folder = tmp_path / "prune" / f"width_mult_{float(Fraction(width)):g}"
        config = json.loads((folder / "config.json").read_text())
        assert config["layer_num_heads"] == [heads, heads] and config["layer_intermediate_sizes"] == [ffn, ffn]
        # The best dev checkpoint is what the report says, through the public loader.
        assert rows[width]["dev_accuracy"] == pytest.approx(dev_accuracy(folder, kq))
        assert rows[width]["change_points"] == pytest.approx(100 * (rows[width]["dev_accuracy"] - rows["1"]["dev_accuracy"]))
        model = SequenceClassifier(EncoderConfig.from_dict(config))
        model.load_state_dict(load_file(folder / "model.safetensors"), strict=True)
        assert rows[width]["parameters"] == model.num_parameters() < rows["1"]["parameters"]
    assert json.loads((tmp_path / "prune" / "prune_report.json").read_text())["widths"] == report["widths"]
    # A pruned checkpoint exports with the parity check, faces the INT8 gate, and loads back.
    exported = export(tmp_path / "prune" / "width_mult_0.5", tmp_path / "onnx", dataset_dir=kq, quantize="int8",
                      progress=False)  # the default gate: at most 0.5 points below fp32
    assert exported["fused"]["max_abs_diff"] <= exported["fused"]["tolerance"]
    int8 = exported["variants"]["int8"]
    assert int8["accepted"] and int8["drop"] <= 0.5
    assert dev_accuracy(tmp_path / "onnx", kq) == pytest.approx(rows["1/2"]["dev_accuracy"], abs=0.02)


@pytest.mark.slow
def test_interrupted_prune_resumes_to_the_same_result(teacher, kq, tmp_path, monkeypatch):
    import zhcls.training.loop as loop

    whole = quick_prune(teacher, kq, tmp_path / "whole")
    save_state, calls = loop._save_state, []

    def killed_after_third_save(*args, **kwargs):  # width 3/4: two epochs; width 1/2: its first epoch
        save_state(*args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_save_state", killed_after_third_save)
    with pytest.raises(KeyboardInterrupt):
        quick_prune(teacher, kq, tmp_path / "cut")
    monkeypatch.setattr(loop, "_save_state", save_state)
    assert not (tmp_path / "cut" / "prune_report.json").exists()
    with pytest.raises(ZhclsError, match="hidden_weight"):
        quick_prune(teacher, kq, tmp_path / "cut", resume=True, hidden_weight=0.5)
    resumed = quick_prune(teacher, kq, tmp_path / "cut", resume=True)
    assert [r["dev_accuracy"] for r in resumed["widths"]] == [r["dev_accuracy"] for r in whole["widths"]]
    for name in ("width_mult_0.75", "width_mult_0.5"):
        a, b = (load_file(tmp_path / run / name / "model.safetensors") for run in ("whole", "cut"))
        assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6


@pytest.mark.slow
def test_distill_into_a_narrower_student(teacher, kq, arch, shared, tmp_path):
    from zhcls.deploy.export import export

    vocab = str(shared / "vocab/bert-base-chinese/vocab.txt")
    extra = tmp_path / "data.txt"  # unlabeled texts: the teacher labels them
    extra.write_text("".join(line.split("\t")[0] + "\n" for line in
                             (shared / "data/kuake_qic/train.txt").read_text(encoding="utf-8").splitlines()[-100:]))
    result = distill(teacher=str(teacher), student=str(arch / "student"), init_random=True, vocab_file=vocab,
                     dataset_dir=str(kq), save_dir=str(tmp_path / "student"), hidden_weight=1.0, epochs=1,
                     unlabeled_file=str(extra),
                     max_seq_length=48, threads=1, progress=False)
    saved = load_file(tmp_path / "student" / "model.safetensors")
    assert not any(k.startswith(("project", "student")) for k in saved)  # the projection stays out of the checkpoint
    config = json.loads((tmp_path / "student" / "config.json").read_text())
    assert config["hidden_size"] == 32 and config["zhcls"]["distilled_from"] == str(teacher)
    assert result.best_score == pytest.approx(dev_accuracy(tmp_path / "student", kq))
    exported = export(tmp_path / "student", tmp_path / "student_onnx", progress=False)  # parity-checked
    assert exported["fused"]["max_abs_diff"] <= exported["fused"]["tolerance"]
    assert dev_accuracy(tmp_path / "student_onnx", kq) == pytest.approx(result.best_score, abs=0.02)
    # Another vocabulary: logit distillation works (each side tokenises with its own), hidden matching cannot.
    clue = str(shared / "vocab/roberta-tiny-clue/vocab.txt")
    with pytest.raises(ZhclsError, match="share vocab.txt"):
        distill(teacher=str(teacher), student=str(arch / "student"), init_random=True, vocab_file=clue,
                dataset_dir=str(kq), save_dir=str(tmp_path / "clue"), hidden_weight=1.0, epochs=1, threads=1,
                progress=False)
    distill(teacher=str(teacher), student=str(arch / "student"), init_random=True, vocab_file=clue,
            dataset_dir=str(kq), save_dir=str(tmp_path / "clue"), epochs=1, max_seq_length=48, threads=1,
            progress=False, overwrite=True)
    assert zhcls.load(tmp_path / "clue").tokenizer.vocab_size == 8021


@pytest.mark.slow
def test_vocabulary_pruning_keeps_logits(teacher, kq, tmp_path):
    report = prune_vocab(teacher, kq, tmp_path / "small", measure=False, progress=False)
    assert report["dev_max_abs_logit_diff"] <= 1e-5
    assert report["vocab_after"] < report["vocab_before"] / 5 and report["file_mb_after"] < report["file_mb_before"] / 2
    before, after = zhcls.load(teacher), zhcls.load(tmp_path / "small")
    texts = [line.split("\t")[0] for line in (kq / "train.txt").read_text(encoding="utf-8").splitlines()[:50]]
    np.testing.assert_allclose(before.logits(texts), after.logits(texts), atol=1e-5)
    assert after.tokenizer.vocab_size == report["vocab_after"] and after.tokenizer.pad_token_id == 0


@pytest.mark.slow
def test_bad_input_is_one_line_and_writes_nothing(teacher, kq, arch, tmp_path):
    out = tmp_path / "out"
    assert_one_line_error(zhcls_cli("prune", "--params_dir", teacher, "--dataset_dir", kq, "--output_dir", out,
                                    "--width_mult_list", "3/4", "0.7"), "width 0.7 keeps 2.8 of 4", "3/4")
    assert_one_line_error(zhcls_cli("prune", "--params_dir", arch / "teacher", "--dataset_dir", kq,
                                    "--output_dir", out), "not a fine-tuned zhcls classifier")
    other = subset(kq, tmp_path / "other", n_train=50, n_dev=20)
    (other / "label.txt").write_text("x\ny\n", encoding="utf-8")
    (other / "train.txt").write_text("甲\tx\n乙\ty\n", encoding="utf-8")
    (other / "dev.txt").write_text("甲\tx\n", encoding="utf-8")
    assert_one_line_error(zhcls_cli("distill", "--teacher", teacher, "--student", arch / "student", "--init_random",
                                    "--dataset_dir", other, "--save_dir", out), "--teacher", "label set differs")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert_one_line_error(zhcls_cli("prune", "--params_dir", teacher, "--dataset_dir", kq, "--width_mult_list", "1/2",
                                    "--output_dir", blocker / "sub"), "--output_dir", "cannot write there")
    assert_one_line_error(zhcls_cli("prune", "--vocab", "--params_dir", teacher, "--dataset_dir", kq,
                                    "--output_dir", blocker / "sub"), "cannot write there")
    assert not out.exists()
