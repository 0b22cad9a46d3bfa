"""What the model sees of a text longer than max_seq_length: the long-text policy.

- ``truncate``: the first tokens (PaddleNLP's behaviour, and the default);
- ``head_tail``: the first quarter and the last three quarters of the budget (Sun et al. 2019, "How to
  fine-tune BERT for text classification", found head + tail beats either end alone on long reviews);
- ``sliding``: windows of the budget every ``stride`` tokens, the last one flush with the end; the
  windows' logits are pooled (``mean`` or ``max``) into the text's, in `inference.predictor`.

The policy is one of training's settings, stored in the checkpoint's config.json (``zhcls.long_text``),
so that evaluate, predict, the ONNX predictor and serving cut texts as training did. Torch-free.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from zhcls.errors import ZhclsError

POLICIES = ("truncate", "head_tail", "sliding")
POOLINGS = ("mean", "max")
HEAD_SHARE = 0.25  # head_tail: Sun et al.'s best split was 128 head + 382 tail tokens of 510


@dataclass(frozen=True)
class LongText:
    policy: str = "truncate"
    stride: int = 0  # sliding: tokens between the starts of two windows; 0 = half a window
    pooling: str = "mean"

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ZhclsError(f"--long_text {self.policy}: choose one of {', '.join(POLICIES)}")
        if self.pooling not in POOLINGS:
            raise ZhclsError(f"--window_pooling {self.pooling}: choose one of {', '.join(POOLINGS)}")
        if self.stride < 0:
            raise ZhclsError(f"--stride {self.stride}: must be positive (or 0 for half a window)")

    @classmethod
    def from_meta(cls, meta: dict) -> LongText:
        """The policy stored in a checkpoint's ``zhcls`` block (truncate for checkpoints without one)."""
        return cls(**meta.get("long_text", {}))

    def to_meta(self) -> dict:
        return asdict(self)

    def check(self, budget: int) -> None:
        """The stride against the window (``budget`` tokens): a stride longer than a window skips text."""
        if self.policy == "sliding" and self.stride > budget:
            raise ZhclsError(f"--stride {self.stride} is longer than a window ({budget} tokens: max_seq_length "
                             "minus [CLS] and [SEP]): text between windows would be skipped")

    def step(self, budget: int) -> int:
        """Tokens between window starts: the stride, or half a window."""
        return self.stride or max(1, budget // 2)

    def windows(self, n_tokens: int, budget: int) -> int:
        """How many pieces `pieces` makes of a text of ``n_tokens`` tokens (without tokenising it again)."""
        if n_tokens <= budget or self.policy != "sliding":
            return 1
        return len(range(0, n_tokens - budget, self.step(budget))) + 1

    def pieces(self, ids: list[int], budget: int) -> list[list[int]]:
        """The token pieces of one text that the model sees, each at most ``budget`` tokens."""
        if len(ids) <= budget or self.policy == "truncate":
            return [ids[:budget]]
        if self.policy == "head_tail":
            head = int(budget * HEAD_SHARE)
            return [ids[:head] + ids[len(ids) - (budget - head):]]
        self.check(budget)
        starts = [*range(0, len(ids) - budget, self.step(budget)), len(ids) - budget]
        return [ids[s:s + budget] for s in starts]
