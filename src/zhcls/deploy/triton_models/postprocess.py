"""Triton Python model: logits in, label and score out, for EVERY row of every request in the batch
(the ensemble's last step; PaddleNLP's Triton post-processing read only row 0 of a batch)."""
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from zhcls.inference.predictor import softmax


class TritonPythonModel:
    def initialize(self, args):
        here = Path(__file__).resolve().parent
        self.labels = json.loads((here / "zhcls.json").read_text(encoding="utf-8"))["labels"]

    def execute(self, requests):
        responses = []
        for request in requests:
            probs = softmax(pb_utils.get_input_tensor_by_name(request, "logits").as_numpy().astype(np.float32))
            best = probs.argmax(axis=-1)
            labels = np.array([[self.labels[i].encode("utf-8")] for i in best], dtype=object)
            scores = probs[np.arange(len(best)), best].reshape(-1, 1).astype(np.float32)
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("label", labels), pb_utils.Tensor("score", scores)]))
        return responses
