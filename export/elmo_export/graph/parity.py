"""The parity check every written model passes: its graph against a reference forward.

Torch-free. The graph runs in onnxruntime (through the one session factory,
:func:`elmo_runtime.loading.session.create_session`) and the reference (the PyTorch
model for ``elmo export``, the float64 NumPy forward for ``elmo convert``) on
the same inputs, on shapes unlike one another (several batch sizes and
lengths, mixed lengths in one batch, non-zero initial states). Every
mismatch is collected and one :class:`ExportError` names them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from elmo_runtime.errors import ElmoError
from elmo_runtime.format import chars, contract
from elmo_runtime.format.options import ElmoOptions
from elmo_runtime.loading.session import create_session

DEFAULT_ATOL = contract.PARITY_ATOL
# (batch size, max tokens): shapes chosen unlike each other; rows get mixed lengths
PARITY_SHAPES = ((1, 1), (1, 17), (3, 8), (5, 33), (2, 60))
# outputs compared (token_vectors is checked through layer 0)
COMPARED = (contract.OUTPUT_LAYERS, contract.OUTPUT_MASK, contract.OUTPUT_STATE_C,
            contract.OUTPUT_STATE_H)
_ALPHABET = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,'-") + [
    "é", "ß", "ж", "中", "😀"
]

Reference = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
# (rng, batch size, max tokens) -> sentences of tokens
SentenceMaker = Callable[[np.random.Generator, int, int], list[list[str]]]


class ExportError(ElmoError):
    """The exported graph does not reproduce its reference."""


@dataclass
class ParityReport:
    max_abs_diff: float
    cases: list[dict[str, Any]]
    reference: str = ""
    tolerance: float = 0.0  # what max_abs_diff was held to: atol x that output's scale

    def metadata(self, atol: float) -> dict[str, Any]:
        """The ``elmo_edge.parity`` metadata of a model that passed."""
        return {
            "checked": True,
            "atol": atol,
            "max_abs_diff": self.max_abs_diff,
            "tolerance": self.tolerance,
            "reference": self.reference,
            "shapes": [[c["batch"], c["tokens"]] for c in self.cases],
        }


def sentences_of(token: Callable[[np.random.Generator], str]) -> SentenceMaker:
    """A maker of ``batch`` sentences of random lengths in [0, max_len] (the first of
    exactly max_len), each token drawn by ``token(rng)``."""

    def make(rng: np.random.Generator, batch: int, max_len: int) -> list[list[str]]:
        lengths = rng.integers(0, max_len + 1, size=batch)
        lengths[0] = max_len
        return [[token(rng) for _ in range(n)] for n in lengths]

    return make


def _random_token(rng: np.random.Generator) -> str:
    size = int(rng.choice([1, 2, 5, 9, 60])) if rng.random() < 0.1 else int(rng.integers(1, 12))
    return "".join(rng.choice(_ALPHABET, size=size))


def random_sentences(rng: np.random.Generator, batch: int, max_len: int) -> list[list[str]]:
    """Sentences of random lengths in [0, max_len] (one of exactly max_len) of random tokens."""
    return sentences_of(_random_token)(rng, batch, max_len)


def check_parity(
    reference: Reference,
    reference_name: str,
    options: ElmoOptions,
    onnx_bytes: bytes | str | Path,
    atol: float = DEFAULT_ATOL,
    shapes: tuple[tuple[int, int], ...] = PARITY_SHAPES,
    seed: int = 0,
    scheme: chars.TokenScheme | None = None,
    sentences: SentenceMaker = random_sentences,
) -> ParityReport:
    """Run the graph (serialized bytes, or the path of its file) and ``reference`` (a feed →
    outputs function) on the same inputs.

    A difference passes when it is at most ``atol`` times the largest absolute
    reference value of that output (at least 1). Raises ExportError listing
    every mismatch, ModelError when onnxruntime cannot load the graph.
    """
    # no pre-packed copies of the weights: a few small cases do not repay them (and a model
    # of the original size would hold ~0.3 GB more while converting)
    session = create_session(onnx_bytes, "cpu", config={"session.disable_prepacking": "1"})
    rng = np.random.default_rng(seed)
    o = options
    failures, cases, worst, worst_tolerance = [], [], 0.0, atol
    for case, (batch, max_len) in enumerate(shapes):
        packed = chars.pack(sentences(rng, batch, max_len), o.max_characters_per_token,
                            scheme=scheme)
        feed = packed.feed()
        if case % 2 == 1:  # every other case starts from a non-zero state
            feed[contract.INPUT_STATE_C] = rng.uniform(
                -1, 1, (2, o.n_layers, batch, o.lstm_dim)).astype(np.float32)
            feed[contract.INPUT_STATE_H] = rng.uniform(
                -1, 1, (2, o.n_layers, batch, o.projection_dim)).astype(np.float32)
        steps = int(packed.token_index.shape[1])
        got = dict(zip(COMPARED, session.run(list(COMPARED), feed), strict=True))
        expected = reference(feed)
        diffs = {}
        for name in COMPARED:
            have, want = got[name], np.asarray(expected[name])
            if have.shape != want.shape:
                failures.append(f"{name}: shape {have.shape}, expected {want.shape} "
                                f"(batch {batch}, tokens {steps})")
                continue
            diff = float(np.abs(have.astype(np.float64) - want).max()) if want.size else 0.0
            diffs[name] = diff
            # atol on values of order 1; float32 rounding grows with the values' size
            scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
            if diff >= worst:
                worst, worst_tolerance = diff, atol * scale
            if not diff <= atol * scale:
                failures.append(f"{name}: max abs diff {diff:.3g} > {atol:g} x {scale:.3g} "
                                f"(batch {batch}, tokens {steps})")
        cases.append({"batch": batch, "tokens": steps, "max_abs_diff": diffs})
    if failures:
        raise ExportError(f"ONNX output differs from {reference_name}: " + "; ".join(failures))
    return ParityReport(worst, cases, reference_name, worst_tolerance)
