"""elmo-edge export side: the PyTorch biLM, ELMo weight files, ONNX export, training."""
