"""AllenNLP 0.9's ``ElmoEmbedder``, drop-in: change the import, keep the code.

>>> from elmo_runtime.compat.allennlp import ElmoEmbedder   # was: allennlp.commands.elmo
>>> elmo = ElmoEmbedder(options_file, weight_file, cuda_device=-1)
>>> elmo.embed_sentence(["The", "cat", "sat"]).shape       # (3, 3, 1024) float32

The same methods, arguments, shapes, dtypes, empty-sentence results and hdf5 layout as
``allennlp.commands.elmo`` of AllenNLP 0.9 (docs/switching.md lists each), and the same
numbers: like AllenNLP's ``_ElmoBiLm`` the LSTM state carries over from one call to the next
by batch row, so a pipeline's vectors depend on its call sequence, as they did there
(``stateful=False`` gives every sentence a zero start state instead). The model files are a
pair, a folder or a ZIP as published (:mod:`.sources`), converted to ONNX once into the user
cache (:mod:`.converted`), or an elmo-edge ``.onnx`` file. No torch: results are NumPy
arrays (``batch_to_embeddings`` too, where AllenNLP returned torch tensors).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import IO

import numpy as np

from ..embedder import Embedder
from ..errors import InputError, ProviderError
from ..files import atomic_path
from .converted import model_for
from .sources import SourceError

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 64
OUTPUT_FORMATS = ("all", "top", "average")


class ConfigurationError(InputError):
    """What AllenNLP raised as ``allennlp.common.checks.ConfigurationError`` (blank input
    lines, a repeated sentence key)."""


def empty_embedding() -> np.ndarray:
    """AllenNLP's result for an empty sentence: float64 zeros ``(3, 0, 1024)``, whatever
    the model's size (its hard-coded value, kept so that code testing for it still works)."""
    return np.zeros((3, 0, 1024))


class ElmoEmbedder:
    """``ElmoEmbedder(options_file, weight_file, cuda_device=-1)`` of AllenNLP 0.9.

    ``options_file``: options.json, or a model folder / NLPL or SeqVec ZIP / ``.onnx`` file /
    bundled or pulled model's name (then ``weight_file`` is None); none at all, AllenNLP's
    download of the original model, is a SourceError saying what to pass. ``cuda_device``:
    -1 for the CPU, 0 for the CUDA execution provider (the onnxruntime-gpu build;
    ProviderError otherwise).
    Keyword-only extras: ``stateful`` (default True, AllenNLP's behaviour), ``threads``
    (onnxruntime intra-op threads). Raises ElmoError subclasses with one-line messages.
    """

    def __init__(self, options_file: str | os.PathLike | None = None,
                 weight_file: str | os.PathLike | None = None, cuda_device: int = -1, *,
                 stateful: bool = True, threads: int | None = None) -> None:
        if options_file is None:
            raise SourceError(
                "ElmoEmbedder() without a model: AllenNLP 0.9 downloaded the original ELMo "
                "here, elmo-edge downloads nothing implicitly; run `elmo pull "
                "allennlp-original` once and pass \"allennlp-original\", or pass options.json "
                "and the weights file, a model folder or ZIP, an .onnx file or \"default\"")
        if isinstance(cuda_device, bool) or not isinstance(cuda_device, int):
            raise ProviderError(f"cuda_device must be an int (-1 for the CPU), found "
                                f"{cuda_device!r}")
        if cuda_device > 0:
            raise ProviderError(
                f"cuda_device={cuda_device}: elmo-edge uses the CUDA provider's device 0; "
                f"run with CUDA_VISIBLE_DEVICES={cuda_device} and cuda_device=0")
        provider = "cuda" if cuda_device == 0 else "cpu"
        path = model_for(options_file, weight_file)
        try:
            self._embedder = Embedder(path, stateful=stateful, provider=provider,
                                      threads=threads)
        except ProviderError as e:
            raise ProviderError(f"cuda_device={cuda_device}: {e}") from None  # e names the fix
        self.cuda_device = cuda_device
        self.model_path = path

    @property
    def stateful(self) -> bool:
        return self._embedder.stateful

    def reset_states(self) -> None:
        """Forget the carried LSTM state (AllenNLP had no such method: a new embedder)."""
        self._embedder.reset_states()

    def batch_to_embeddings(self, batch: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        """``(activations, mask)``: float32 ``(B, 3, T, D)`` with zeros past each sentence,
        and int64 ``(B, T)``; T = the longest sentence. NumPy, not torch."""
        vectors = self._embedder.embed_batch(batch)
        steps = max((len(s) for s in batch), default=0)
        dim = self._embedder.info.options.output_dim
        layers = self._embedder.info.options.n_output_layers
        activations = np.zeros((len(batch), layers, steps, dim), dtype=np.float32)
        mask = np.zeros((len(batch), steps), dtype=np.int64)
        for i, v in enumerate(vectors):
            activations[i, :, : v.shape[1]] = v
            mask[i, : v.shape[1]] = 1
        return activations, mask

    def embed_sentence(self, sentence: list[str]) -> np.ndarray:
        """One sentence's vectors: float32 ``(3, n, D)``; ``(3, 0, 1024)`` float64 if empty."""
        return self.embed_batch([sentence])[0]

    def embed_batch(self, batch: list[list[str]]) -> list[np.ndarray]:
        """Each sentence's vectors from one forward pass (state: one row per sentence).

        ``[[]]`` alone returns :func:`empty_embedding` without running the model, as
        AllenNLP did; an empty sentence among others runs (its row's state moves on) and
        returns :func:`empty_embedding`.
        """
        if batch == [[]]:
            return [empty_embedding()]
        return [v if v.shape[1] else empty_embedding()
                for v in self._embedder.embed_batch(batch)]

    def embed_sentences(self, sentences: Iterable[list[str]],
                        batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[np.ndarray]:
        """Vectors of each sentence, lazily: consecutive groups of ``batch_size``, in order,
        each an :meth:`embed_batch` call."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, found {batch_size!r}")
        it = iter(sentences)
        while group := list(islice(it, batch_size)):
            yield from self.embed_batch(group)

    def embed_file(self, input_file: IO[str] | str | os.PathLike, output_file_path: str,
                   output_format: str = "all", batch_size: int = DEFAULT_BATCH_SIZE,
                   forget_sentences: bool = False, use_sentence_keys: bool = False,
                   overwrite: bool = False) -> None:
        """AllenNLP's ``elmo`` command: one whitespace-tokenized sentence per line → hdf5.

        Datasets (float32) keyed by line number (``"0"``, ``"1"``, …) or, with
        ``use_sentence_keys``, by the sentence; ``output_format``: "all" ``(3, n, D)``,
        "top" ``(n, D)`` or "average" ``(n, D)``; unless ``forget_sentences`` or
        ``use_sentence_keys``, a ``sentence_to_index`` dataset holds the JSON map of each
        sentence to its key. ``input_file`` (an open text file, closed at the end as
        AllenNLP did, or a path). Raises ConfigurationError for blank lines or a repeated
        sentence key; the output appears only when complete (AllenNLP wrote it in place).
        An existing ``output_file_path`` is replaced only with ``overwrite=True``, else
        FileExistsError before the input is read (AllenNLP replaced it silently).
        """
        if output_format not in OUTPUT_FORMATS:
            raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, found "
                             f"{output_format!r}")
        if not overwrite and os.path.lexists(output_file_path):
            raise FileExistsError(f"{output_file_path}: exists; pass overwrite=True to replace "
                                  "it (AllenNLP replaced it silently; nothing was written)")
        from ..output.writers import import_h5py

        h5py = import_h5py()
        if isinstance(input_file, (str, os.PathLike)):
            input_file = open(input_file, encoding="utf-8")  # noqa: SIM115 (closed below)
        try:
            sentences = [line.strip() for line in input_file]
        finally:
            input_file.close()
        blank = [i for i, line in enumerate(sentences) if line == ""]
        if blank:
            raise ConfigurationError(f"Your input file contains empty lines at indexes "
                                     f"{blank}. Please remove them.")
        split = [s.split() for s in sentences]
        embedded = self.embed_sentences(split, batch_size)
        if use_sentence_keys:
            logger.warning("Using sentences as keys can fail if sentences contain forward "
                           "slashes or colons. Use with caution.")
            keyed: Iterable[tuple[str, np.ndarray]] = zip(sentences, embedded, strict=True)
        else:
            keyed = ((str(i), x) for i, x in enumerate(embedded))
        sentence_to_index: dict[str, str] = {}
        with atomic_path(Path(output_file_path)) as tmp, h5py.File(tmp, "w") as fout:
            for key, embeddings in keyed:
                if use_sentence_keys and key in fout:
                    raise ConfigurationError(
                        f"Key already exists in {output_file_path}. To encode duplicate "
                        "sentences, do not pass the --use-sentence-keys flag.")
                if not forget_sentences and not use_sentence_keys:
                    sentence_to_index[sentences[int(key)]] = key
                if output_format == "all":
                    output = embeddings
                elif output_format == "top":
                    output = embeddings[-1]
                else:
                    output = np.average(embeddings, axis=0)
                fout.create_dataset(str(key), output.shape, dtype="float32", data=output)
            if not forget_sentences and not use_sentence_keys:
                index = fout.create_dataset("sentence_to_index", (1,),
                                            dtype=h5py.special_dtype(vlen=str))
                index[0] = json.dumps(sentence_to_index)


__all__ = ["ConfigurationError", "ElmoEmbedder", "empty_embedding"]
