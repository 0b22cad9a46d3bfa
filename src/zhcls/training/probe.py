"""``--head_init probe``: the classification head fitted on the frozen encoder's features before fine-tuning.

Linear probing then fine-tuning (Kumar et al., "Fine-Tuning can Distort Pretrained Features", ICLR 2022). A
fresh random head on a pretrained sentence encoder learns slowly: mean-pooled e5 states share a large common
component and differ little from text to text, so for tens of steps the head's gradient mostly chases that
component and the encoder gets noise. Fitting the head first (an L2-regularised logistic regression on the
features, full-batch L-BFGS: seconds) starts fine-tuning from the linear probe's accuracy.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from zhcls.errors import ZhclsError

log = logging.getLogger("zhcls")


@torch.no_grad()
def features(model, batches: Iterable[dict]) -> torch.Tensor:
    """The pooled features the head reads, for every batch, in eval mode (no dropout)."""
    was_training = model.training
    model.eval()
    out = [model.backbone(**batch)[1].float().cpu() for batch in batches]
    model.train(was_training)
    return torch.cat(out)


def fit_head(model, batches: Callable[[], Iterable[dict]], targets: torch.Tensor, *, multi_class: bool,
             l2: float = 1e-3, steps: int = 200) -> float:
    """Set ``model.classifier`` to the logistic regression of ``targets`` on the features; returns its training
    accuracy (multi-class) or the share of label decisions it gets right (multi-label)."""
    head = model.classifier
    if not isinstance(head, torch.nn.Linear):
        raise ZhclsError("--head_init probe: needs a one-layer head (BERT / ERNIE / mean pooling), not ELECTRA's")
    x = features(model, batches())
    mean = x.mean(0)
    weight = torch.zeros_like(head.weight, dtype=torch.float32, device="cpu", requires_grad=True)
    bias = torch.zeros_like(head.bias, dtype=torch.float32, device="cpu", requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")
    xc = x - mean  # centred: the common component goes into the bias, not into a badly scaled weight

    def closure():
        optimizer.zero_grad()
        logits = xc @ weight.T + bias
        loss = F.cross_entropy(logits, targets) if multi_class else F.binary_cross_entropy_with_logits(
            logits, targets.float())
        loss = loss + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        logits = xc @ weight.T + bias
        fit = ((logits.argmax(-1) == targets).float().mean() if multi_class
               else ((logits > 0) == targets.bool()).float().mean())
        head.weight.copy_(weight.to(head.weight))
        head.bias.copy_((bias - weight @ mean).to(head.bias))  # undo the centring
    log.info("head fitted on the frozen features of %d training inputs (linear probe): %.1f%% right", len(x),
             100 * float(fit))
    return float(fit)
