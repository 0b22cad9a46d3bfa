"""Width pruning: keep the most important heads and FFN neurons of every layer. The result is an
ordinary `SequenceClassifier` whose config lists per-layer head counts and FFN widths.

A width w keeps round(w x heads) heads per layer and the same share of FFN neurons, chosen by the
`importance` scores; the kept heads and neurons stay in their original order, so the pruned model
computes exactly what the full model computes with the other heads and neurons masked out.
"""
from __future__ import annotations

import copy
from fractions import Fraction

import torch
from torch import nn

from zhcls.compress.config import DEFAULT_WIDTHS
from zhcls.errors import ZhclsError
from zhcls.models.modeling import SequenceClassifier

TOLERANCE = 0.05  # heads: 0.67 x 12 = 8.04 is 2/3; 0.7 x 12 = 8.4 is refused


def valid_widths(num_heads: int) -> list[str]:
    """The widths that keep a whole number of heads, largest first, as fractions (12: 11/12 ... 1/12)."""
    return [str(Fraction(k, num_heads)) for k in range(num_heads - 1, 0, -1)]


def parse_width(text: str, num_heads: int) -> Fraction:
    """'3/4' or '0.75' -> the exact share of ``num_heads`` it keeps; refuses one that keeps a fraction of a head."""
    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise ZhclsError(f"--width_mult_list: {text!r} is not a fraction or a decimal (e.g. 3/4 or 0.75)") from None
    kept = value * num_heads
    if not 0 < value <= 1 or abs(kept - round(kept)) > TOLERANCE:
        common = [w for w in DEFAULT_WIDTHS if (Fraction(w) * num_heads).denominator == 1]
        raise ZhclsError(f"--width_mult_list: width {text} keeps {float(kept):g} of {num_heads} attention heads; "
                         f"a width must keep a whole number of heads: one of {', '.join(valid_widths(num_heads))} "
                         f"(e.g. {' '.join(common) or '1/2'}) or 1")
    return Fraction(round(kept), num_heads)


def width_dir_name(width: Fraction) -> str:
    """PaddleNLP's folder name: width_mult_0.75, width_mult_0.67, width_mult_0.5."""
    return f"width_mult_{round(float(width), 2):g}"


def keep_top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k highest scores, in ascending index order."""
    return torch.topk(scores, k).indices.sort().values


def _take(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A Linear holding only the output rows (dim 0) or input columns (dim 1) in ``index``."""
    weight = linear.weight.detach().index_select(dim, index).clone()
    bias = linear.bias.detach()
    if dim == 0:
        bias = bias.index_select(0, index)
    out = nn.Linear(weight.shape[1], weight.shape[0]).to(weight.device, weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        out.bias.copy_(bias)
    return out


def prune_width(model: SequenceClassifier, width: Fraction, head_scores: list[torch.Tensor],
                neuron_scores: list[torch.Tensor]) -> SequenceClassifier:
    """A copy of ``model`` keeping, per layer, the ``width`` share of its heads and FFN neurons with the
    highest scores. Width 1 returns an exact copy."""
    pruned = copy.deepcopy(model)
    config = pruned.config
    head_size = config.head_size
    for i, layer in enumerate(pruned.backbone.encoder.layer):
        attention = layer.attention.self
        n_heads = round(width * attention.num_heads)
        heads = keep_top(head_scores[i], n_heads)
        dims = (heads[:, None] * head_size + torch.arange(head_size)).flatten().to(attention.query.weight.device)
        attention.query, attention.key, attention.value = (_take(p, dims, 0) for p in
                                                           (attention.query, attention.key, attention.value))
        attention.num_heads = n_heads
        layer.attention.output.dense = _take(layer.attention.output.dense, dims, 1)
        n_neurons = round(width * layer.intermediate.dense.out_features)
        neurons = keep_top(neuron_scores[i], n_neurons).to(attention.query.weight.device)
        layer.intermediate.dense = _take(layer.intermediate.dense, neurons, 0)
        layer.output.dense = _take(layer.output.dense, neurons, 1)
        config.layer_num_heads[i], config.layer_intermediate_sizes[i] = n_heads, n_neurons
    return pruned
