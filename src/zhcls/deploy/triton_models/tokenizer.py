"""Triton Python model: UTF-8 texts in, zhcls's token ids out (the ensemble's first step).

Every request of the batch Triton hands over is tokenised in one call, then split back, one answer
per request. Sequences are padded to max_seq_length: the ONNX step batches requests across clients,
and Triton merges only requests of one shape. Long single texts are cut by the checkpoint's long-text
policy (truncate or head_tail: one row per text; sliding needs the python form of the repository).
"""
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from zhcls.data.long_text import LongText
from zhcls.data.tokenizer import Tokenizer

NAMES = ("input_ids", "token_type_ids", "attention_mask")


class TritonPythonModel:
    def initialize(self, args):
        here = Path(__file__).resolve().parent
        settings = json.loads((here / "zhcls.json").read_text(encoding="utf-8"))
        self.max_seq_length, self.pair = settings["max_seq_length"], settings["task"] == "pair"
        self.prefix = settings.get("text_prefix", "")  # e5 few-shot models read "query: " + text, as every predictor
        self.tokenizer = Tokenizer.from_dir(here)
        self.long_text = LongText(**settings.get("long_text", {}))

    def execute(self, requests):
        def texts(request, name):
            return [t.decode("utf-8") for t in pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1)]

        firsts = [texts(r, "text") for r in requests]
        seconds = [t for r in requests for t in texts(r, "text_pair")] if self.pair else None
        merged = [self.prefix + t for batch in firsts for t in batch]
        if self.pair:
            enc = self.tokenizer.encode(merged, seconds, self.max_seq_length)
        else:  # truncate and head_tail make one piece per text, so rows stay one per text
            enc, _ = self.tokenizer.encode_long(merged, self.max_seq_length, self.long_text)
        padded = self.tokenizer.pad(enc.input_ids, enc.token_type_ids, pad_to=self.max_seq_length)
        responses, start = [], 0
        for batch in firsts:
            rows = slice(start, start + len(batch))
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(name, np.ascontiguousarray(padded[name][rows])) for name in NAMES]))
            start += len(batch)
        return responses
