"""The bounds every runtime enforces on what a caller gives it, declared once.

The Python runtime checks them (:mod:`elmo_runtime.corpus`, the embedder,
:mod:`elmo_runtime.mix`) and ``web/contract.json`` carries them to the browser
(:mod:`.web`), whose code refuses the same values with the same words.
"""

from __future__ import annotations

import unicodedata

import numpy as np

MAX_SENTENCE_TOKENS = 10_000  # tokens a sentence may have: the model's memory grows with it
FLOAT32_MAX = float(np.finfo(np.float32).max)  # 3.4028234663852886e+38
MAX_GAMMA = FLOAT32_MAX  # |gamma| of a scalar mix: vectors are float32
NORMAL_FORM = "NFC"  # the Unicode form tokens are read in, by the tokenizer and the packers


def normalize(text: str) -> str:
    """``text`` in :data:`NORMAL_FORM` (canonical composition: NFD ``"e\\u0301"`` → ``"é"``).

    The tokenizer and both char-id packers read text through it, so text typed in
    composed or decomposed form gives the same tokens and ids (JavaScript:
    ``String.prototype.normalize``). Lone surrogates are left as they are.
    """
    return unicodedata.normalize(NORMAL_FORM, text)
