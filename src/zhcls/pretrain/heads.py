"""Pretraining models: the encoder of `models.modeling` with transformers' pretraining heads, under
transformers' names, so that the saved folder loads in `BertForMaskedLM` / `ErnieForMaskedLM` /
`ElectraForMaskedLM` / `ElectraForPreTraining` with the same logits.

- `MaskedLM`: BERT / ERNIE put ``cls.predictions`` (dense, activation, LayerNorm, decoder tied to
  the word embeddings, bias) on the encoder; ELECTRA's generator puts ``generator_predictions``
  (dense to the embedding width, GELU, LayerNorm) and ``generator_lm_head`` (tied, with a bias).
- `Electra`: a small `MaskedLM` generator that shares the discriminator's embeddings, and the
  discriminator: the encoder plus ``discriminator_predictions`` (dense, activation, one logit per
  token: replaced or original).

The decoder weight is the embedding matrix itself (not a copy), as in transformers, so only the
bias is a parameter of its own. ``forward`` returns (mean loss, counts) so that DDP wraps it whole.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zhcls.models.modeling import ACTIVATIONS, Backbone, EncoderConfig
from zhcls.pretrain.masking import IGNORE

MLM_ARCHITECTURES = {"bert": "BertForMaskedLM", "ernie": "ErnieForMaskedLM", "electra": "ElectraForMaskedLM"}
DISCRIMINATOR_LOSS_WEIGHT = 50.0  # ELECTRA's lambda


class Transform(nn.Module):
    """dense -> activation -> LayerNorm, before the tied decoder."""

    def __init__(self, c: EncoderConfig, width: int, act: str):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, width)
        self.act = ACTIVATIONS[act]
        self.LayerNorm = nn.LayerNorm(width, eps=c.layer_norm_eps)

    def forward(self, x):
        return self.LayerNorm(self.act(self.dense(x)))


class BertPredictions(nn.Module):  # cls.predictions
    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.transform = Transform(c, c.hidden_size, c.hidden_act)
        self.bias = nn.Parameter(torch.zeros(c.vocab_size))


class BertMLMHead(nn.Module):  # cls
    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.predictions = BertPredictions(c)


class TiedBias(nn.Module):  # generator_lm_head: its weight is the word embeddings
    def __init__(self, vocab_size: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(vocab_size))


def _init_weights(module: nn.Module, std: float) -> None:
    # The BERT recipe, as SequenceClassifier does it.
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class MaskedLM(nn.Module):
    """An encoder with its family's masked-LM head. ``backbone`` may be one already built (and trained)."""

    def __init__(self, config: EncoderConfig, backbone: Backbone | None = None):
        super().__init__()
        self.config = config
        self.add_module(config.model_type, backbone or Backbone(config))
        if config.model_type == "electra":
            self.generator_predictions = Transform(config, config.embedding_size, "gelu")
            self.generator_lm_head = TiedBias(config.vocab_size)
            heads = [self.generator_predictions]
        else:
            self.cls = BertMLMHead(config)
            heads = [self.cls]
        if backbone is None:
            _init_weights(self, config.initializer_range)
        else:
            for head in heads:
                _init_weights(head, config.initializer_range)

    @property
    def backbone(self) -> Backbone:
        return getattr(self, self.config.model_type)

    def predict(self, hidden: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits of hidden states (of any leading shape)."""
        embeddings = self.backbone.embeddings.word_embeddings.weight
        if self.config.model_type == "electra":
            return F.linear(self.generator_predictions(hidden), embeddings, self.generator_lm_head.bias)
        return F.linear(self.cls.predictions.transform(hidden), embeddings, self.cls.predictions.bias)

    def logits(self, input_ids, token_type_ids=None, attention_mask=None) -> torch.Tensor:
        """(batch, seq, vocab): what transformers' *ForMaskedLM returns."""
        hidden, _ = self.backbone(input_ids, token_type_ids, attention_mask)
        return self.predict(hidden)

    def masked_logits(self, input_ids, attention_mask, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits at the predicted positions only (the decoder is the costliest matmul), and their labels."""
        hidden, _ = self.backbone(input_ids, None, attention_mask)
        where = labels != IGNORE
        return self.predict(hidden[where]).float(), labels[where]

    def forward(self, input_ids, attention_mask, labels):
        logits, target = self.masked_logits(input_ids, attention_mask, labels)
        loss = F.cross_entropy(logits, target)
        return loss, {"mlm_acc": (logits.argmax(-1) == target).float().mean()}


class DiscriminatorHead(nn.Module):  # discriminator_predictions
    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.act = ACTIVATIONS[c.hidden_act]
        self.dense_prediction = nn.Linear(c.hidden_size, 1)

    def forward(self, hidden):
        return self.dense_prediction(self.act(self.dense(hidden))).squeeze(-1)


def generator_config(c: EncoderConfig) -> EncoderConfig:
    """ELECTRA's generator: a quarter of the discriminator's width (HFL's small generator: 64 of 256),
    as deep, embedding in the discriminator's embedding width so that the embeddings are shared."""
    hidden = max(64, c.hidden_size // 4)
    heads = max(1, hidden // 64)
    return EncoderConfig(model_type="electra", vocab_size=c.vocab_size, hidden_size=hidden,
                         num_hidden_layers=c.num_hidden_layers, num_attention_heads=heads,
                         intermediate_size=4 * hidden, hidden_act="gelu",
                         max_position_embeddings=c.max_position_embeddings, type_vocab_size=c.type_vocab_size,
                         layer_norm_eps=c.layer_norm_eps, pad_token_id=c.pad_token_id,
                         embedding_size=c.embedding_size, id2label={0: "LABEL_0"})


class Electra(nn.Module):
    """Replaced-token detection: the generator fills the masks by sampling, the discriminator tells
    each token original or replaced. The discriminator is the encoder that fine-tuning keeps."""

    def __init__(self, config: EncoderConfig, backbone: Backbone | None = None, generator: MaskedLM | None = None):
        super().__init__()
        self.config = config
        self.add_module(config.model_type, backbone or Backbone(config))
        self.discriminator_predictions = DiscriminatorHead(config)
        _init_weights(self.discriminator_predictions, config.initializer_range)
        if backbone is None:
            _init_weights(self.backbone, config.initializer_range)
        self.generator = generator or MaskedLM(generator_config(config))
        # One embedding table for both, as in ELECTRA: the generator's gradient trains the discriminator's inputs.
        self.generator.backbone.embeddings = self.backbone.embeddings

    @property
    def backbone(self) -> Backbone:
        return getattr(self, self.config.model_type)

    def discriminator_logits(self, input_ids, token_type_ids=None, attention_mask=None) -> torch.Tensor:
        """(batch, seq): what transformers' ElectraForPreTraining returns."""
        hidden, _ = self.backbone(input_ids, token_type_ids, attention_mask)
        return self.discriminator_predictions(hidden)

    def forward(self, input_ids, attention_mask, labels):
        gen_logits, target = self.generator.masked_logits(input_ids, attention_mask, labels)
        gen_loss = F.cross_entropy(gen_logits, target)
        where = labels != IGNORE
        with torch.no_grad():  # sampled, not argmax: the generator's mistakes are the discriminator's lesson
            sampled = torch.multinomial(F.softmax(gen_logits, -1), 1).squeeze(-1)
            corrupted = input_ids.clone()
            corrupted[where] = sampled
            replaced = (corrupted != torch.where(where, labels, input_ids)).float()
        disc_logits = self.discriminator_logits(corrupted, None, attention_mask).float()
        real = attention_mask.bool()
        disc_loss = F.binary_cross_entropy_with_logits(disc_logits[real], replaced[real])
        stats = {"gen_acc": (gen_logits.argmax(-1) == target).float().mean(),
                 "disc_acc": ((disc_logits[real] > 0).float() == replaced[real]).float().mean()}
        return gen_loss + DISCRIMINATOR_LOSS_WEIGHT * disc_loss, stats
