"""The PyTorch biLM (modules), its export to a parity-checked ONNX file, and the one safe
``torch.load`` (safe_load). Torch side: imports torch, ``graph`` and ``bilm_tf``; never ``train``.
"""
