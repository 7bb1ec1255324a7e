"""Training a biLM with bilm-tf's objective: corpus and vocabulary (data), the language model
(lm), settings (config), the run's state (run), checkpoints, processes, progress, the loop.

Torch side: imports ``pytorch``, ``bilm_tf`` and the runtime. ``data`` and ``progress`` import
without torch (recipes read corpora with them).
"""
