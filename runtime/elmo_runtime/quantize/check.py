"""The check: a quantized model against its float32 source, per layer and per batch.

Both models embed the same sentences (sorted by length, :data:`CHECK_BATCH` a
batch); for every token (boundaries excluded) the cosine similarity of its
vectors is measured per layer. Each sentence is then embedded **alone** by the
quantized model and compared with its rows in the batch: the largest absolute
difference must not exceed :data:`BATCH_TOLERANCE` of the mode (int8 and int4
scale activations per token; fp16 is batch-independent only to float16's
precision, see below).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..corpus import read_sentences
from ..errors import InputError, first_line
from ..format import chars, contract
from ..format.contract import ModelInfo
from ..loading.model_file import ModelFile
from ..loading.session import create_session

CHECK_BATCH = 8
CPU, CUDA = "cpu", "cuda"
# Largest |alone - in a batch| accepted. fp16: None (reported, not enforced):
# measured 2.4e-4 on the bundled model on the CPU provider (onnxruntime's
# float16 kernels round partial sums to float16, and how a product is split
# depends on the batch shape); 1e-5 is below float16's resolution at 0.1.
BATCH_TOLERANCE: dict[str, float | None] = {"int8": 1e-5, "int4": 1e-5, "fp16": None}

# Built-in check sentences: varied length, register, punctuation, numbers,
# names, non-ASCII and one token longer than the 48 bytes a token keeps.
SAMPLE_SENTENCES: tuple[str, ...] = (
    "Hello .",
    "The cat sat on the mat .",
    "I can't believe it's already December !",
    "Stocks fell 3.2 % on Tuesday after the central bank raised interest rates again .",
    "She sells sea shells by the sea shore .",
    "Who wrote the letter , and why was it never sent ?",
    "The mitochondria is the powerhouse of the cell .",
    "In 1969 , Neil Armstrong became the first person to walk on the Moon .",
    "Please send the report to j.smith@example.com by 5 p.m. tomorrow .",
    "The quick brown fox jumps over the lazy dog .",
    "Despite the heavy rain , thousands of fans waited outside the stadium for hours , "
    "singing and waving flags until the gates finally opened .",
    "Paris is the capital of France .",
    "He ordered a café au lait and a croissant at the naïve little bistro in Zürich .",
    "Run !",
    "The defendant , who had pleaded not guilty , was acquitted of all charges .",
    "Photosynthesis converts light energy into chemical energy stored in glucose .",
    "Can you recommend a good book about the history of mathematics ?",
    "THE MEETING HAS BEEN POSTPONED UNTIL FURTHER NOTICE .",
    "Antidisestablishmentarianism is often cited as one of the longest English words .",
    "pneumonoultramicroscopicsilicovolcanoconiosis-and-supercalifragilisticexpialidocious "
    "is not a real compound .",
    "The committee will review the proposal , consult the stakeholders , estimate the costs , "
    "and publish its recommendations before the end of the fiscal year , which ends on "
    "30 June .",
    "I saw her duck .",
    "Time flies like an arrow ; fruit flies like a banana .",
    "Visit https://www.example.org/docs/index.html for more information .",
    "The new iPhone 15 Pro costs $ 999 in the U.S. and € 1,199 in Germany .",
    "Water boils at 100 degrees Celsius at sea level .",
    "They played chess in the park every Sunday afternoon for twenty years .",
    "Why ?",
    "The bank of the river was steep , so we walked to the bank in town instead .",
    "Machine translation systems still struggle with idioms , sarcasm and rare words "
    "like \" sesquipedalian \" .",
)


@dataclass(frozen=True)
class LayerCosine:
    """Per-token cosine similarity of one output layer, quantized vs float32."""

    layer: int
    mean: float
    min: float


@dataclass(frozen=True)
class CheckReport:
    """The comparison of a quantized model with its float32 source.

    ``batch_max_abs_diff``: the largest difference between a sentence's
    vectors embedded alone and inside its check batch (None: not measured);
    ``batch_tolerance``: the most accepted (None: reported only).
    """

    layers: list[LayerCosine]
    threshold: float
    sentences: int
    tokens: int
    provider: str
    batch_max_abs_diff: float | None = None
    batch_tolerance: float | None = None

    @property
    def batch_independent(self) -> bool:
        if self.batch_max_abs_diff is None or self.batch_tolerance is None:
            return True
        return self.batch_max_abs_diff <= self.batch_tolerance  # NaN fails

    @property
    def passed(self) -> bool:
        # `not <` would let NaN through: a NaN mean fails.
        return all(c.mean >= self.threshold for c in self.layers) and self.batch_independent

    def failures(self) -> list[str]:
        found = [
            f"layer {c.layer} mean cosine {c.mean:.4f} < {self.threshold}"
            for c in self.layers
            if not c.mean >= self.threshold
        ]
        if not self.batch_independent:
            found.append(
                f"a sentence alone and in a batch differ by {self.batch_max_abs_diff:.3g} "
                f"> {self.batch_tolerance:g}"
            )
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "sentences": self.sentences,
            "tokens": self.tokens,
            "provider": self.provider,
            "threshold_mean_cosine": self.threshold,
            "cosine": [{"layer": c.layer, "mean": c.mean, "min": c.min} for c in self.layers],
            "batch_independence": {
                "max_abs_diff_alone_vs_batch": self.batch_max_abs_diff,
                "tolerance": self.batch_tolerance,
            },
            "passed": self.passed,
        }


def _session(model: str | Path | bytes | ModelFile, provider: str) -> Any:
    """The check's one way to load a model: the project's session factory."""
    return create_session(model, provider=provider)


def compare_models(
    reference: str | Path | bytes | ModelFile,
    candidate: str | Path | bytes,
    sentences: Sequence[Sequence[str]],
    info: ModelInfo,
    threshold: float,
    provider: str = CPU,
    batch_tolerance: float | None = None,
    alone: bool = True,
) -> CheckReport:
    """Per-layer mean and minimum per-token cosine of ``candidate`` vs ``reference``.

    The reference runs on the CPU; the candidate on ``provider`` ("cpu" or
    "cuda"). ``<S>``/``</S>`` are left out of the cosines, so are empty
    sentences. With ``alone``, each sentence is also embedded by itself and
    compared with its rows in the batch (``batch_max_abs_diff``, all steps).
    Raises InputError when no sentence has a token, ModelError/ProviderError
    when a model cannot be loaded.
    """
    sentences = [list(s) for s in sentences if len(s)]
    if not sentences:
        raise InputError("no tokens to check the quantized model on")
    ref, cand = _session(reference, CPU), _session(candidate, provider)
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    cosines: list[np.ndarray] = []
    worst = 0.0
    for start in range(0, len(order), CHECK_BATCH):
        batch = [sentences[i] for i in order[start : start + CHECK_BATCH]]
        feed = chars.pack(batch, info.max_chars, scheme=info.vocabulary).feed()
        a = ref.run([contract.OUTPUT_LAYERS], feed)[0].astype(np.float64)
        b = cand.run([contract.OUTPUT_LAYERS], feed)[0]
        for row, sentence in enumerate(batch):
            span = slice(1, 1 + len(sentence))
            cosines.append(_cosine(a[row, :, span], b[row, :, span].astype(np.float64)))
            if alone:
                one = cand.run([contract.OUTPUT_LAYERS], chars.pack(
                    [sentence], info.max_chars, scheme=info.vocabulary).feed())[0][0]
                steps = one.shape[1]
                diff = np.abs(one - b[row, :, :steps]).max()
                worst = max(worst, float(diff)) if not np.isnan(diff) else float("nan")
    per_layer = np.concatenate(cosines, axis=1)  # (L+1, tokens)
    layers = [
        LayerCosine(layer, float(c.mean()), float(c.min())) for layer, c in enumerate(per_layer)
    ]
    return CheckReport(layers, threshold, len(sentences), per_layer.shape[1], provider,
                       worst if alone else None, batch_tolerance)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine along the last axis; two zero vectors agree (1), one zero vector does not (0)."""
    na, nb = np.linalg.norm(a, axis=-1), np.linalg.norm(b, axis=-1)
    dot = (a * b).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dot / (na * nb)
    both_zero = (na == 0) & (nb == 0)
    one_zero = (na == 0) ^ (nb == 0)
    return np.where(both_zero, 1.0, np.where(one_zero, 0.0, cos))


def load_sentences(path: str | Path) -> list[list[str]]:
    """Check sentences from a UTF-8 file: one sentence a line, tokens split on whitespace.

    Blank lines are skipped. Raises InputError naming the file (and line and
    column of invalid UTF-8), or when the file has no sentence.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            sentences = [s for s in read_sentences(f, str(path)) if s]
    except FileNotFoundError:
        raise InputError(f"{path}: no such sentences file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a sentences file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read the sentences file ({e.strerror})") from None
    except InputError as e:  # the corpus's hint names `elmo embed`'s --errors: not ours
        raise InputError(first_line(e).split("; fix the file")[0]) from None
    if not sentences:
        raise InputError(f"{path}: no sentences (every line is blank)")
    return sentences
