"""The deploy layer: verified ONNX export (`export`) and the accuracy-latency benchmark (`bench`)."""
