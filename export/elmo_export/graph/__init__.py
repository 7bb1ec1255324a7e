"""The ONNX graph of the ELMo biLM, its float64 NumPy reference, the parity check, and
`elmo convert` of bilm-tf weights (:func:`elmo_export.graph.convert.convert_bilm_tf`).

Torch-free: imports :mod:`elmo_export.bilm_tf` and the runtime, never torch or the torch rooms
(``pytorch``, ``train``, ``efml``).
"""
