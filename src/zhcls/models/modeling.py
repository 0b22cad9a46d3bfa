"""The encoder: one post-LayerNorm Transformer for BERT, RoBERTa-zh, ERNIE 3.0 and ELECTRA.

Read it top to bottom. The variations between the families are small:
  * ERNIE 3.0 adds a task-type embedding (row 0 at every position: that is what PaddleNLP does).
  * ELECTRA embeds in ``embedding_size`` and projects to ``hidden_size`` when they differ,
    has no pooler, and classifies with its own two-layer head.
  * multilingual-e5 (a BERT) is pretrained on the mean of the last hidden states, not on [CLS]:
    ``pooling="mean"`` classifies that (no pooler).
Every layer may have its own head count and FFN width, so a pruned model is still an ordinary
model of this class. Parameter names follow the transformers layout of the matching model_type
(``bert.encoder.layer.0.attention.self.query.weight`` ...), so Hugging Face checkpoints load
without renaming and our checkpoints load in transformers.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from zhcls.errors import ZhclsError

MODEL_TYPES = ("bert", "ernie", "electra")
ARCHITECTURES = {
    "bert": "BertForSequenceClassification",
    "ernie": "ErnieForSequenceClassification",
    "electra": "ElectraForSequenceClassification",
}

# "gelu" is the exact erf GELU everywhere in transformers (and ELECTRA's TF code); Google's BERT TF
# code used the tanh approximation, which transformers calls "gelu_new".
ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_python": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_fast": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "tanh": torch.tanh,
}


@dataclass
class EncoderConfig:
    """Architecture and label space. ``to_dict()`` is a valid transformers config.json."""

    model_type: str = "bert"
    vocab_size: int = 21128
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    classifier_dropout: float | None = None
    # ELECTRA: embedding width (None or == hidden_size means no projection).
    embedding_size: int | None = None
    # ERNIE 3.0: task-type embedding, row 0 added at every position.
    use_task_id: bool = False
    task_type_vocab_size: int = 3
    # "default": the family's own head; "linear": one Linear on [CLS] (ELECTRA's TF fine-tuning head).
    classifier_type: str = "default"
    # What the head reads: "cls" (the pooler on [CLS], or ELECTRA's [CLS] state) or "mean" (the masked mean
    # of the last hidden states: what sentence encoders such as multilingual-e5 are trained to embed).
    pooling: str = "cls"
    # Pruning: per-layer head count and FFN width (None: uniform num_attention_heads / intermediate_size).
    layer_num_heads: list[int] | None = None
    layer_intermediate_sizes: list[int] | None = None
    id2label: dict[int, str] = field(default_factory=lambda: {0: "LABEL_0", 1: "LABEL_1"})
    problem_type: str | None = None
    # Keys we do not model (e.g. zhcls's training metadata) survive a load/save round trip.
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.model_type not in MODEL_TYPES:
            raise ZhclsError(f"unsupported model_type {self.model_type!r}: zhcls supports {', '.join(MODEL_TYPES)}")
        if self.hidden_act not in ACTIVATIONS:
            raise ZhclsError(f"unsupported hidden_act {self.hidden_act!r}: expected one of {', '.join(ACTIVATIONS)}")
        if self.pooling not in ("cls", "mean"):
            raise ZhclsError(f"unsupported pooling {self.pooling!r}: expected cls or mean")
        self.id2label = {int(k): v for k, v in self.id2label.items()}
        if self.embedding_size is None:
            self.embedding_size = self.hidden_size
        if self.hidden_size % self.num_attention_heads:
            raise ZhclsError(f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}")
        self.layer_num_heads = list(self.layer_num_heads or [self.num_attention_heads] * self.num_hidden_layers)
        self.layer_intermediate_sizes = list(self.layer_intermediate_sizes or [self.intermediate_size] * self.num_hidden_layers)
        if len(self.layer_num_heads) != self.num_hidden_layers or len(self.layer_intermediate_sizes) != self.num_hidden_layers:
            raise ZhclsError("layer_num_heads / layer_intermediate_sizes must have one entry per layer")

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def labels(self) -> list[str]:
        return [self.id2label[i] for i in range(self.num_labels)]

    @property
    def is_pruned(self) -> bool:
        return (any(h != self.num_attention_heads for h in self.layer_num_heads)
                or any(i != self.intermediate_size for i in self.layer_intermediate_sizes))

    @classmethod
    def from_dict(cls, d: dict) -> EncoderConfig:
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in d.items() if k in known}
        if "id2label" not in d and "num_labels" in d:
            kwargs["id2label"] = {i: f"LABEL_{i}" for i in range(int(d["num_labels"]))}
        ignored = {"architectures", "label2id", "num_labels", "transformers_version", "torch_dtype", "dtype"}
        kwargs["extra"] = {k: v for k, v in d.items() if k not in known and k not in ignored}
        return cls(**kwargs)

    def to_dict(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        if not self.is_pruned:  # uniform layers: keep config.json identical to a transformers one
            d.pop("layer_num_heads")
            d.pop("layer_intermediate_sizes")
        if self.model_type != "electra":
            d.pop("embedding_size")
        if self.pooling == "cls":
            d.pop("pooling")
        if self.model_type != "ernie":
            d.pop("use_task_id")
            d.pop("task_type_vocab_size")
        d["architectures"] = [ARCHITECTURES[self.model_type]]
        d["id2label"] = {str(i): label for i, label in self.id2label.items()}
        d["label2id"] = {label: i for i, label in self.id2label.items()}
        return {**extra, **d}


class Embeddings(nn.Module):
    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.embedding_size, padding_idx=c.pad_token_id)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.embedding_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.embedding_size)
        if c.use_task_id:
            self.task_type_embeddings = nn.Embedding(c.task_type_vocab_size, c.embedding_size)
        self.LayerNorm = nn.LayerNorm(c.embedding_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids):
        # Position ids of shape (batch, seq), the form ONNX Runtime's embedding fusion recognises.
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings(token_type_ids)
        if hasattr(self, "task_type_embeddings"):
            x = x + self.task_type_embeddings.weight[0]  # ERNIE 3.0: task id 0 everywhere
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):
    def __init__(self, c: EncoderConfig, num_heads: int):
        super().__init__()
        self.num_heads, self.head_size = num_heads, c.head_size
        width = num_heads * c.head_size
        self.query = nn.Linear(c.hidden_size, width)
        self.key = nn.Linear(c.hidden_size, width)
        self.value = nn.Linear(c.hidden_size, width)
        self.dropout_p = c.attention_probs_dropout_prob

    def forward(self, x, mask):
        B, T, _ = x.shape
        q, k, v = (proj(x).view(B, T, self.num_heads, self.head_size).transpose(1, 2)
                   for proj in (self.query, self.key, self.value))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0)
        return y.transpose(1, 2).reshape(B, T, self.num_heads * self.head_size)


class AddNorm(nn.Module):
    """dense -> dropout -> residual add -> LayerNorm (post-LN). transformers calls it *Output."""

    def __init__(self, c: EncoderConfig, in_features: int):
        super().__init__()
        self.dense = nn.Linear(in_features, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, h, residual):
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class Attention(nn.Module):
    def __init__(self, c: EncoderConfig, num_heads: int):
        super().__init__()
        self.self = SelfAttention(c, num_heads)
        self.output = AddNorm(c, num_heads * c.head_size)

    def forward(self, x, mask):
        return self.output(self.self(x, mask), x)


class Intermediate(nn.Module):
    def __init__(self, c: EncoderConfig, width: int):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, width)
        self.act = ACTIVATIONS[c.hidden_act]

    def forward(self, x):
        return self.act(self.dense(x))


class Layer(nn.Module):
    def __init__(self, c: EncoderConfig, num_heads: int, ffn_width: int):
        super().__init__()
        self.attention = Attention(c, num_heads)
        self.intermediate = Intermediate(c, ffn_width)
        self.output = AddNorm(c, ffn_width)

    def forward(self, x, mask):
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(c, h, i) for h, i in zip(c.layer_num_heads, c.layer_intermediate_sizes))

    def forward(self, x, mask, states: list | None = None):
        for layer in self.layer:
            x = layer(x, mask)
            if states is not None:
                states.append(x)
        return x


class Pooler(nn.Module):
    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, hidden):
        return torch.tanh(self.dense(hidden[:, 0]))


class Backbone(nn.Module):
    """Embeddings -> (projection) -> encoder -> (pooler). Returns (sequence_output, pooled or [CLS])."""

    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.embeddings = Embeddings(c)
        if c.embedding_size != c.hidden_size:
            self.embeddings_project = nn.Linear(c.embedding_size, c.hidden_size)
        self.encoder = Encoder(c)
        self.pooling = c.pooling
        if c.model_type != "electra" and c.pooling == "cls":  # ELECTRA's "pooled output" is the [CLS] state
            self.pooler = Pooler(c)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, states: list | None = None):
        """``states``, when given, receives the embedding output and every layer's output (distillation)."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        if hasattr(self, "embeddings_project"):
            x = self.embeddings_project(x)
        # Additive key mask, broadcast over heads and queries: 0 = attend, the dtype's minimum = ignore.
        # Additive rather than boolean: that is the form ONNX Runtime's attention fusion recognises.
        mask = None if attention_mask is None else (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        if states is not None:
            states.append(x)
        hidden = self.encoder(x, mask, states)
        if self.pooling == "mean":
            pooled = mean_pool(hidden, attention_mask)
        else:
            pooled = self.pooler(hidden) if hasattr(self, "pooler") else hidden[:, 0]
        return hidden, pooled


def mean_pool(hidden, attention_mask=None):
    """The mean of each sequence's hidden states over its real (unpadded) tokens, [CLS] and [SEP] included."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    weights = attention_mask[:, :, None].to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def embedding(hidden, attention_mask=None):
    """A sentence encoder's embedding (e5, SBERT): `mean_pool`, L2-normalised, so a dot product is the cosine.
    `zhcls embed`, zero-shot and few-shot read it; the ONNX export carries it as its second output."""
    return F.normalize(mean_pool(hidden, attention_mask), dim=-1)


class ElectraClassificationHead(nn.Module):
    """ELECTRA's head on the [CLS] state: dropout -> dense -> GELU -> dropout -> out_proj."""

    def __init__(self, c: EncoderConfig, dropout: float):
        super().__init__()
        if c.classifier_type == "default":
            self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(c.hidden_size, c.num_labels)

    def forward(self, cls_state):
        x = self.dropout(cls_state)
        if hasattr(self, "dense"):
            x = self.dropout(F.gelu(self.dense(x)))
        return self.out_proj(x)


class SequenceClassifier(nn.Module):
    """Backbone + classification head. ``forward`` returns logits of shape (batch, num_labels)."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        # The backbone's attribute name is the model_type, as in transformers ("bert.", "ernie.", "electra.").
        self.add_module(config.model_type, Backbone(config))
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        if config.model_type == "electra":
            self.classifier = ElectraClassificationHead(config, dropout)
        else:
            self.dropout = nn.Dropout(dropout)
            self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.apply(self._init_weights)

    @property
    def backbone(self) -> Backbone:
        return getattr(self, self.config.model_type)

    def _init_weights(self, module):
        # The BERT recipe: N(0, 0.02) weights, zero biases, identity LayerNorm, zero padding row.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)
            elif module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None, output_hidden_states: bool = False):
        """Logits; with ``output_hidden_states``, (logits, hidden states): the embedding output and each
        layer's output, every one (batch, seq, hidden), as transformers orders them."""
        states = [] if output_hidden_states else None
        _, pooled = self.backbone(input_ids, token_type_ids, attention_mask, states)
        logits = self.head(pooled)
        return (logits, tuple(states)) if output_hidden_states else logits

    def head(self, pooled: torch.Tensor) -> torch.Tensor:
        """Logits from the pooled sentence vector."""
        if self.config.model_type == "electra":
            return self.classifier(pooled)
        return self.classifier(self.dropout(pooled))

    def embed(self, input_ids, token_type_ids=None, attention_mask=None) -> torch.Tensor:
        """The sentence embedding, whatever the head reads: `embedding` of the last hidden states."""
        hidden, _ = self.backbone(input_ids, token_type_ids, attention_mask)
        return embedding(hidden, attention_mask)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def count_parameters(config: EncoderConfig) -> int:
    """Parameter count of an architecture without allocating it (for `zhcls models`)."""
    c, e, h = config, config.embedding_size, config.hidden_size
    n = (c.vocab_size + c.max_position_embeddings + c.type_vocab_size) * e + 2 * e
    if c.use_task_id:
        n += c.task_type_vocab_size * e
    if e != h:
        n += e * h + h
    for heads, ffn in zip(c.layer_num_heads, c.layer_intermediate_sizes):
        w = heads * c.head_size
        n += 3 * (h * w + w) + (w * h + h) + 2 * h  # q, k, v, attention output, LayerNorm
        n += (h * ffn + ffn) + (ffn * h + h) + 2 * h  # FFN in, out, LayerNorm
    if c.model_type == "electra":
        n += (h * h + h if c.classifier_type == "default" else 0) + h * c.num_labels + c.num_labels
    else:
        n += (h * h + h if c.pooling == "cls" else 0) + h * c.num_labels + c.num_labels
    return n
