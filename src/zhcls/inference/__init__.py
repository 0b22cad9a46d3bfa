"""The inference layer: `Predictor` (tokenise, sort by length, batch, restore order) with a PyTorch and an
ONNX Runtime backend, and `load()` above both. Only `torch_predictor` imports torch."""
