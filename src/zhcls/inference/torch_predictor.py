"""PyTorch backend of `Predictor`: a model in memory (training's dev evaluation) or a checkpoint folder."""
from __future__ import annotations

import numpy as np
import torch

from zhcls.data.tokenizer import Tokenizer
from zhcls.inference.predictor import Predictor, check_max_seq_length
from zhcls.models.devices import amp_dtype, resolve_device


class TorchPredictor(Predictor):
    """PyTorch backend: a checkpoint folder, on CPU or GPU (autocast bf16 on GPU when asked)."""

    def __init__(self, model, tokenizer: Tokenizer, meta: dict, *, device: str = "auto", batch_size: int = 32,
                 max_seq_length: int | None = None, amp: str = "none"):
        max_len = check_max_seq_length(max_seq_length or meta.get("max_seq_length", 128),
                                       model.config.max_position_embeddings)
        super().__init__(tokenizer, model.config.labels, max_seq_length=max_len,
                         batch_size=batch_size, problem_type=meta.get("problem_type", "multi_class"),
                         task=meta.get("task", "text"), **Predictor.meta_options(meta))
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.amp_dtype = amp_dtype(amp, self.device)

    @property
    def embedding_size(self) -> int:
        return self.model.config.hidden_size

    def _forward(self, batch, features: bool = False):
        inputs = {k: torch.from_numpy(v).to(self.device) for k, v in batch.items()}
        with torch.inference_mode(), torch.autocast(self.device.type, self.amp_dtype or torch.float32,
                                                    enabled=self.amp_dtype is not None):
            out = self.model.backbone(**inputs)[1] if features else self.model(**inputs)
            return out.float().cpu().numpy()

    def _embed(self, batch):
        inputs = {k: torch.from_numpy(v).to(self.device) for k, v in batch.items()}
        with torch.inference_mode(), torch.autocast(self.device.type, self.amp_dtype or torch.float32,
                                                    enabled=self.amp_dtype is not None):
            return self.model.embed(**inputs).float().cpu().numpy()

    def sentence_features(self, texts, progress: bool = False) -> np.ndarray:
        """The sentence vector the classifier head reads (pooled output, or ELECTRA's [CLS] state), (n, hidden)."""
        texts_a, texts_b = self._split(texts)
        texts_a = [self.text_prefix + t for t in texts_a]
        return self.run(lambda batch: self._forward(batch, features=True), self.model.config.hidden_size,
                        texts_a, texts_b, progress)
