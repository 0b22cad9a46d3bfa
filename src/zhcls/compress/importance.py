"""How much each attention head and each FFN neuron matters to the task loss (DynaBERT, after Michel
et al. 2019), scored on training batches of a fine-tuned classifier.

A head's score is |dL/dm| for a mask m multiplying its output (m = 1): the sum over positions of its
context vector times the gradient flowing into it. Hooks read both, so the encoder needs no head-mask
argument. A neuron's score is |sum(W * dL/dW) + b * dL/db| over its row of the FFN's first dense
layer. Both are summed over batches, absolute value per batch, as in DynaBERT.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from zhcls.models.modeling import SequenceClassifier


def importance_scores(model: SequenceClassifier, batches: Iterable[tuple[dict, torch.Tensor]], *,
                      progress: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(head scores, neuron scores): one tensor per layer, of its head count / FFN width.

    ``batches`` yields (model inputs, class ids). The model runs in eval mode (no dropout) and its
    gradients are left cleared.
    """
    layers = model.backbone.encoder.layer
    heads = [torch.zeros(layer.attention.self.num_heads) for layer in layers]
    neurons = [torch.zeros(layer.intermediate.dense.out_features) for layer in layers]
    contexts: list[torch.Tensor | None] = [None] * len(layers)

    def keep_context(i):
        def hook(module, inputs, output):
            output.retain_grad()
            contexts[i] = output
        return hook

    handles = [layer.attention.self.register_forward_hook(keep_context(i)) for i, layer in enumerate(layers)]
    was_training = model.training
    model.eval()
    try:
        for inputs, target in tqdm(batches, desc="importance", unit="batch", disable=not progress, leave=False):
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(**inputs).float(), target, reduction="sum").backward()
            for i, layer in enumerate(layers):
                ctx = contexts[i]
                B, T, _ = ctx.shape
                per_head = (ctx * ctx.grad).view(B, T, layer.attention.self.num_heads, -1).sum(dim=(0, 1, 3))
                heads[i] += per_head.abs().detach().cpu()
                dense = layer.intermediate.dense
                per_neuron = (dense.weight * dense.weight.grad).sum(1) + dense.bias * dense.bias.grad
                neurons[i] += per_neuron.abs().detach().cpu()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return heads, neurons
