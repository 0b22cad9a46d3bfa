"""Triton Python model: UTF-8 texts in, label and score out, through zhcls's own ONNX Runtime predictor
(`export --triton_repo DIR --triton_backend python`): tokenising, the long-text policy (head_tail,
sliding windows and their pooling), the forward and the softmax are exactly `zhcls.load(export).predict`'s.

For Triton builds without the onnxruntime backend (PyTriton's bundled server has only the Python one).
Every request of the batch Triton hands over goes into one predict() call, then is split back.
"""
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from zhcls.inference.loading import load


class TritonPythonModel:
    def initialize(self, args):
        here = Path(__file__).resolve().parent
        settings = json.loads((here / "zhcls.json").read_text(encoding="utf-8"))
        self.predictor = load(here, backend="onnx", device="cpu", variant=settings["variant"],
                              batch_size=settings["batch_size"], threads=settings["threads"] or None)
        self.pair = self.predictor.task == "pair"

    def execute(self, requests):
        def texts(request, name):
            return [t.decode("utf-8") for t in pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)]

        firsts = [texts(r, "text") for r in requests]
        merged = [t for batch in firsts for t in batch]
        if self.pair:
            merged = list(zip(merged, [t for r in requests for t in texts(r, "text_pair")]))
        results = self.predictor.predict(merged)
        responses, start = [], 0
        for batch in firsts:
            rows = results[start:start + len(batch)]
            labels = np.array([[r["label"].encode("utf-8")] for r in rows], dtype=object)
            scores = np.array([[r["score"]] for r in rows], dtype=np.float32)
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("label", labels), pb_utils.Tensor("score", scores)]))
            start += len(batch)
        return responses
