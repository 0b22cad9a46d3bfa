"""`zhcls pretrain`: packing, whole-word masking, the CLUE sample check (MLM overfits a small file),
transformers parity of the saved heads, resume of a streamed job, fine-tuning from the result, and
bad input. Tiny models on real text from ../shared."""
import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from helpers import SMALL
from zhcls.cli import main
from zhcls.data.tokenizer import Tokenizer
from zhcls.models.pretrained import load_pretrained
from zhcls.pretrain import PretrainConfig, pretrain
from zhcls.pretrain.corpus import jieba_word_starts, pack
from zhcls.pretrain.heads import Electra, MaskedLM
from zhcls.pretrain.masking import IGNORE, choose_words, mask_batch
from zhcls.pretrain.pretraining import build


def real_lines(shared, name="kuake_qic", n=40):
    lines = (shared / "data" / name / "train.txt").read_text(encoding="utf-8").splitlines()[:n]
    return [line.split("\t")[0] for line in lines]


@pytest.fixture(scope="module")
def vocab(shared):
    return str(shared / "vocab/bert-base-chinese/vocab.txt")


@pytest.fixture(scope="module")
def corpus(shared, tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(real_lines(shared, "tnews", 60)) + "\n", encoding="utf-8")
    return path


def quick(corpus, vocab, save_dir, **kw):
    args = dict(corpus=[str(corpus)], model_name=SMALL, init_random=True, vocab_file=vocab, save_dir=str(save_dir),
                max_seq_length=48, batch_size=8, max_steps=3, threads=1, progress=False)
    return pretrain(**{**args, **kw})


def test_packing_keeps_every_token_in_order(shared, vocab):
    tokenizer = Tokenizer(vocab)
    lines = real_lines(shared) + ["很" * 100]  # the last line is longer than a sequence: it is cut
    seqs = list(pack(tokenizer, lines, 32))
    assert all(len(ids) <= 32 and ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
               for ids, _ in seqs)
    assert sum(len(ids) for ids, _ in seqs) > 0.8 * len(seqs) * 32  # packed: sequences are mostly full
    packed = [i for ids, _ in seqs for i in ids if i not in (tokenizer.cls_token_id, tokenizer.sep_token_id)]
    assert packed == [i for ids, _ in tokenizer.pieces(lines) for i in ids]


def test_whole_word_masking_masks_whole_words(shared, vocab):
    tokenizer = Tokenizer(vocab)
    seqs = list(pack(tokenizer, real_lines(shared, n=200), 64, jieba_word_starts()))
    ids, starts = (tokenizer.pad([s[k] for s in seqs], [[0] * len(s[0]) for s in seqs])["input_ids"] for k in (0, 1))
    starts = starts.astype(bool)
    maskable = ~np.isin(ids, [tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id])
    assert 0.3 < starts[maskable].mean() < 0.9  # jieba joins characters into words
    words_seen = 0
    for row in range(len(ids)):
        chosen = set(choose_words(starts[row], maskable[row], 0.15, np.random.default_rng(row)))
        assert abs(len(chosen) - 0.15 * maskable[row].sum()) <= 3
        for word in np.split(np.flatnonzero(maskable[row]), np.flatnonzero(starts[row][maskable[row]])[1:]):
            hit = {int(p) in chosen for p in word}
            assert len(hit) == 1  # a word is masked whole or not at all
            words_seen += len(word) > 1 and hit == {True}
    assert words_seen > 20  # multi-character words were masked
    inputs, labels = mask_batch(ids, starts, maskable, 0.15, 103, tokenizer.vocab_size, np.random.default_rng(0))
    again, _ = mask_batch(ids, starts, maskable, 0.15, 103, tokenizer.vocab_size, np.random.default_rng(0))
    target = labels != IGNORE
    assert np.array_equal(inputs, again) and np.array_equal(labels[target], ids[target])
    assert 0.7 < (inputs[target] == 103).mean() < 0.9  # 80 % [MASK]
    assert np.array_equal(inputs[~target], ids[~target])


def test_clue_sample_overfits(shared, tmp_path):
    """CLUE's run_sample.sh check: MLM on a small file reaches masked-token accuracy >= 0.99 (on purpose)."""
    sample = tmp_path / "sample.txt"
    sample.write_text("\n".join(real_lines(shared, n=6)) + "\n", encoding="utf-8")
    result = pretrain(corpus=[str(sample)], model_name=SMALL, init_random=True, vocab_from_data=True,
                      save_dir=str(tmp_path / "out"), max_seq_length=64, batch_size=8, epochs=200,
                      learning_rate=3e-3, whole_word_masking=True, threads=1, progress=False)
    assert result.best_score >= 0.99
    meta = json.loads((tmp_path / "out/config.json").read_text(encoding="utf-8"))["zhcls"]["pretrain"]
    assert meta["mlm_acc"] >= 0.99 and meta["whole_word_masking"]


def test_mlm_checkpoint_loads_in_transformers(corpus, vocab, tmp_path):
    transformers = pytest.importorskip("transformers")
    quick(corpus, vocab, tmp_path / "mlm")
    ours = _reload(tmp_path / "mlm", "mlm")
    state = load_file(tmp_path / "mlm/model.safetensors")
    theirs = transformers.BertForMaskedLM.from_pretrained(tmp_path / "mlm").eval()
    batch = _batch(tmp_path / "mlm")
    with torch.no_grad():
        expected = theirs(**batch).logits
        got = ours.logits(**batch)
    assert torch.allclose(got, expected, atol=1e-5)
    assert isinstance(ours, MaskedLM) and any(k.startswith("cls.predictions.transform") for k in state)


def test_electra_checkpoint_loads_in_transformers(corpus, vocab, tmp_path):
    transformers = pytest.importorskip("transformers")
    arch = tmp_path / "arch"
    arch.mkdir()
    (arch / "config.json").write_text(json.dumps({
        "model_type": "electra", "vocab_size": 21128, "embedding_size": 64, "hidden_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 2, "intermediate_size": 256, "max_position_embeddings": 64}), encoding="utf-8")
    quick(corpus, vocab, tmp_path / "el", model_name=str(arch), objective="electra")
    batch = _batch(tmp_path / "el")
    model = _reload(tmp_path / "el", "electra")
    disc = transformers.ElectraForPreTraining.from_pretrained(tmp_path / "el").eval()
    gen = transformers.ElectraForMaskedLM.from_pretrained(tmp_path / "el/generator").eval()
    with torch.no_grad():
        assert torch.allclose(model.discriminator_logits(**batch), disc(**batch).logits, atol=1e-5)
        assert torch.allclose(model.generator.logits(**batch), gen(**batch).logits, atol=1e-5)
    assert isinstance(model, Electra)


def _reload(folder, objective):
    """The pretraining model as `zhcls pretrain --model FOLDER` continues it: encoder and heads from the folder."""
    model, _ = build(PretrainConfig(corpus=["-"], model_name=str(folder), objective=objective), None)
    return model.eval()


def _batch(folder):
    tokenizer = Tokenizer.from_dir(folder)
    enc = tokenizer.encode(["头痛怎么办", "孕妇可以吃螃蟹吗？医生说要少吃"])
    return {k: torch.from_numpy(v) for k, v in tokenizer.pad(enc.input_ids, enc.token_type_ids).items()}


def test_resume_replays_the_stream(corpus, vocab, tmp_path, monkeypatch):
    straight = quick(corpus, vocab, tmp_path / "a", max_steps=4, whole_word_masking=True)
    calls = []
    forward = MaskedLM.forward

    def dies_at_step_3(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed mid-epoch, after the state saved at step 2
        return forward(self, *args)

    with monkeypatch.context() as m:
        m.setattr(MaskedLM, "forward", dies_at_step_3)
        with pytest.raises(KeyboardInterrupt):
            quick(corpus, vocab, tmp_path / "b", max_steps=4, save_steps=2, whole_word_masking=True)
    resumed = quick(corpus, vocab, tmp_path / "b", max_steps=4, whole_word_masking=True, resume=True)
    assert straight.global_step == resumed.global_step == 4
    a, b = (load_file(tmp_path / d / "training_state/model.safetensors") for d in "ab")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_finetuning_starts_from_the_pretrained_encoder(corpus, vocab, tmp_path):
    quick(corpus, vocab, tmp_path / "p")
    saved = load_file(tmp_path / "p/model.safetensors")
    classifier, _ = load_pretrained(str(tmp_path / "p"), ["a", "b", "c"])
    own = classifier.state_dict()
    encoder = [k for k in saved if k.startswith("bert.")]
    assert len(encoder) > 20 and all(np.array_equal(own[k].numpy(), saved[k]) for k in encoder)


def test_bad_input_one_line_exit_2(corpus, vocab, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("\n  \n", encoding="utf-8")
    bad = tmp_path / "bad.txt"
    bad.write_bytes("头痛\n发烧怎么办\n".encode() + b"\xff\xfe broken\n")
    more = tmp_path / "vocab.txt"
    more.write_text(open(vocab, encoding="utf-8").read() + "".join(f"[extra{i}]\n" for i in range(5)), encoding="utf-8")
    quick(corpus, vocab, tmp_path / "model")
    capsys.readouterr()  # its log lines (when an earlier test installed the CLI's handler)
    common = ["-q", "pretrain", "--threads", "1", "--max_steps", "1", "--save_dir", str(tmp_path / "out")]
    cases = [
        ([*common, "--corpus", str(empty), "--model", SMALL, "--init_random", "--vocab_file", vocab], "no text"),
        ([*common, "--corpus", str(bad), "--model", SMALL, "--init_random", "--vocab_file", vocab], f"{bad}:3: not UTF-8"),
        ([*common, "--corpus", str(corpus), "--model", str(tmp_path / "model"), "--vocab_file", str(more)],
         "does not match --model"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("zhcls: error:") and message in err and "\n" not in err, err
    assert not (tmp_path / "out").exists()
