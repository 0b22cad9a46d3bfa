"""The settings of `zhcls embed`, `zeroshot`, `fewshot` and `select`; each field is also the command-line
option of that name (`zhcls.options`). No torch or numpy here."""
from __future__ import annotations

from dataclasses import dataclass

from zhcls.evaluation.config import DatasetOptions
from zhcls.inference.config import RuntimeOptions
from zhcls.options import option
from zhcls.training.config import LoopConfig

ROLES = ("query", "passage")  # `Predictor.embed`'s roles (inference.predictor imports numpy: not here)
STRATEGIES = ("oversampling", "undersampling", "unique")


@dataclass(kw_only=True)
class EmbedderOptions(RuntimeOptions):
    """The model whose embeddings a command reads: an encoder folder, a checkpoint or an export folder."""

    params_path: str = option(help="a pretrained encoder folder (e.g. `zhcls convert` output), a checkpoint, or "
                              "an export folder (ONNX Runtime)")
    backend: str = option("auto")
    progress: bool = True


@dataclass(kw_only=True)
class EmbedConfig(EmbedderOptions):
    """`zhcls embed`."""

    data_file: str = option(help="texts, one per line")
    output_file: str = option("embeddings.npy", ".npy (float32 matrix) or .jsonl (text and vector per line)")
    role: str = option("query", "which of the model's prefixes the texts get (e5: 'query: ' / 'passage: '; none "
                       "for other models)", choices=ROLES)
    variant: str = option("auto", "an export folder's model", choices=("auto", "fp32", "int8", "fp16"))


@dataclass(kw_only=True)
class ZeroshotConfig(EmbedderOptions):
    """`zhcls zeroshot`."""

    labels: str = option(help="label.txt, one label per line")
    data_file: str = option(help="texts, one per line; text<TAB>label lines add the evaluation report")
    descriptions: str | None = option(None, "one description per label, in label.txt's order (default: the label "
                                      "names)")
    template: str = option("{}", "the text each label is embedded as; {} is its description")
    problem_type: str = option("multi_class", choices=("multi_class", "multi_label"))
    threshold: float = option(0.8, "multi-label: the cosine a label must reach")
    temperature: float = option(0.01, "multi-class: softmax over cosine / temperature")
    label_role: str = option("query", "the model's prefix for the label texts", choices=ROLES)
    output_dir: str = option("./zeroshot", "predictions.txt (and report.json for labelled data)")
    overwrite: bool = option(False)


@dataclass(kw_only=True)
class FewshotConfig(LoopConfig, DatasetOptions):
    """`zhcls fewshot`. The loop's defaults are SetFit's: batch 16, one epoch, lr 2e-5, 10 % warmup."""

    shots: int = option(8, "K: examples drawn per class from the training file")
    model_name: str = option("multilingual-e5-small", "the sentence encoder: zoo name or local folder")
    sample_seed: int = option(0, "which K rows of each class are drawn")
    sampling_strategy: str = option("oversampling", "SetFit's pair sampling: as many negative as positive pairs "
                                    "(the rarer kind repeated), or fewer, or each pair once", choices=STRATEGIES)
    num_iterations: int = option(0, "> 0: this many positive and negative pairs per row (SetFit's option)")
    max_pairs: int = option(0, "> 0: at most this many pairs (a CPU budget)")
    train_embeddings: bool = option(False, "also train the word-embedding table (SetFit does; frozen by default: "
                                    "K rows per class move a few hundred of its rows, and on CPU its optimizer "
                                    "state costs more than the encoder's)")
    head_c: float = option(1.0, "the logistic-regression head's C (inverse regularisation)")
    max_dev: int = option(0, "> 0: score dev on this many of its rows (a fixed random subset)")
    cache_dir: str | None = option(None)
    save_dir: str = option("./fewshot")
    batch_size: int = option(16, "pairs per step")
    epochs: int = option(1, "contrastive epochs over the pairs")
    learning_rate: float | None = option(2e-5)
    warmup_proportion: float | None = option(0.1)


@dataclass(kw_only=True)
class SelectConfig(EmbedderOptions):
    """`zhcls select`."""

    pool: str = option(help="unlabelled texts, one per line")
    k: int = option(32, "how many texts to pick")
    output_file: str = option("to_label.txt", "the picked texts, one per line, in the pool's order")
    seed: int = option(0, "k-means initialisation")
