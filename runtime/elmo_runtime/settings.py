"""One resolved embedder setting: :class:`EmbedderSettings` and its :class:`MixSpec`.

Every way an embedder is made (the :class:`~elmo_runtime.embedder.Embedder`
API, `elmo embed` on every engine, `elmo serve`, the Ray actors) goes through
these: each value is checked here, once, when the settings are made
(:class:`~elmo_runtime.errors.SettingError`, one line), and has one name and
one default. They are plain data: ``to_dict``/``from_dict`` give JSON, and
that JSON, not a callable, is what crosses a process boundary (a Ray actor
rebuilds its Embedder from it). Once :meth:`EmbedderSettings.resolved`, the
settings carry the model file's absolute path, so a process that receives
them never looks the name up in the registry again.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .batching import DEFAULT_BATCH_SIZE
from .corpus import MAX_TOKENS
from .errors import MixError, SettingError
from .loading.model_file import ModelFile, locate
from .loading.session import PROVIDERS
from .mix import MODES, Mix, ScalarMix, check_mix, read_mix_file, top_layer
from .token_cache import DEFAULT_CACHE_MB

SCALAR = "scalar"  # MixSpec.mode of learned weights (a mix file or a ScalarMix)


@dataclass(frozen=True)
class MixSpec:
    """How the L+1 layers are mixed, as data.

    ``mode``: "all" (every layer), "top", "average" (equal weights) or
    "scalar" (``weights``, ``gamma``, ``do_layer_norm``: softmax-weighted,
    :class:`~elmo_runtime.mix.ScalarMix`). ``source``: where it came from (a
    mix file's path), for messages only: it does not decide the vectors and is
    not part of :meth:`key`. A scalar mix stays "scalar" even when its weights
    are all equal (it is what the user gave, and what the manifest records).
    """

    mode: str = "all"
    weights: tuple[float, ...] | None = None
    gamma: float = 1.0
    do_layer_norm: bool = False
    source: str | None = None

    def __post_init__(self) -> None:
        if self.mode == SCALAR:
            if self.weights is None:
                raise MixError("a scalar mix needs weights")
            checked = ScalarMix(self.weights, self.gamma, self.do_layer_norm)  # numbers, bounds
            object.__setattr__(self, "weights", checked.weights)
            object.__setattr__(self, "gamma", checked.gamma)
            object.__setattr__(self, "do_layer_norm", checked.do_layer_norm)
        elif self.mode in MODES:
            if self.weights is not None:
                raise MixError(f"mix {self.mode!r} takes no weights")
        else:
            raise MixError(f"unknown mix {self.mode!r}: not one of {', '.join(MODES)}")

    @classmethod
    def of(cls, value: object) -> MixSpec:
        """The spec of ``value``: None or "all", "top", "average", the path of a mix JSON
        file (str or PathLike; read now), a :class:`ScalarMix`, a MixSpec, or a dict
        (:meth:`to_dict` or :meth:`key` form). Raises MixError."""
        if value is None:
            return cls()
        if isinstance(value, MixSpec):
            return value
        if isinstance(value, ScalarMix):
            return cls(SCALAR, value.weights, value.gamma, value.do_layer_norm)
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        if isinstance(value, str) and value in MODES:
            return cls(value)
        if isinstance(value, os.PathLike) or (isinstance(value, str) and Path(value).exists()):
            mix = read_mix_file(value)
            return cls(SCALAR, mix.weights, mix.gamma, mix.do_layer_norm, source=str(value))
        if isinstance(value, str):
            raise MixError(f"unknown mix {value!r}: not one of {', '.join(MODES)} and no such "
                           "mix file")
        raise MixError(f"mix must be None, {', '.join(map(repr, MODES))}, a ScalarMix or the "
                       f"path of a mix file, not {value!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MixSpec:
        """The spec :meth:`to_dict` (or :meth:`key`'s scalar form) wrote. Raises MixError."""
        if "mode" not in data:  # {"weights", "gamma", "do_layer_norm"}: a scalar mix's key
            data = {"mode": SCALAR, **data}
        unknown = sorted(set(data) - {"mode", "weights", "gamma", "do_layer_norm", "source"})
        if unknown:
            raise MixError(f"mix: unknown field {unknown[0]!r}")
        # the weights as given: ScalarMix checks them (and says what a list must hold)
        return cls(str(data["mode"]), data.get("weights"), data.get("gamma", 1.0),
                   data.get("do_layer_norm", False), data.get("source"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field (``weights`` as a list)."""
        out = asdict(self)
        out["weights"] = None if self.weights is None else list(self.weights)
        return out

    def key(self) -> str | dict[str, Any]:
        """What decides the vectors, as a run manifest records it: the mode's name, or a
        scalar mix's ``{"weights", "gamma", "do_layer_norm"}`` (never its source)."""
        if self.mode != SCALAR:
            return self.mode
        return {"weights": list(self.weights or ()), "gamma": self.gamma,
                "do_layer_norm": self.do_layer_norm}

    def label(self) -> str:
        """One word for messages: the mode, or a scalar mix's file (else "scalar")."""
        return self.source or self.mode

    def build(self, n_layers: int) -> Mix | None:
        """The mix for a model of ``n_layers`` (L+1) layers: None for "all" (nothing to
        do), the top layer, or a ScalarMix. Raises MixError when the weights do not fit."""
        if self.mode == "all":
            return None
        if self.mode == "top":
            return top_layer
        if self.mode == "average":
            return ScalarMix([0.0] * n_layers)
        return check_mix(ScalarMix(self.weights or (), self.gamma, self.do_layer_norm), n_layers,
                         self.source or "mix")


def _positive_int(name: str, value: object, optional: bool = True) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SettingError(f"{name} must be a positive integer{' or None' if optional else ''}, "
                           f"found {value!r}")


@dataclass(frozen=True)
class EmbedderSettings:
    """Everything that decides an embedder, checked once, each with its one default.

    ``model``: None (the bundled default), a bundled name or a path;
    ``path``: the model file's absolute path once :meth:`resolved` (None
    before). ``provider``: "auto", "cpu" or "cuda"; ``threads``: intra-op
    threads (None: the CPUs the process may use, :mod:`elmo_runtime.cpus`).
    ``mix``: a :class:`MixSpec` (any value :meth:`MixSpec.of` takes is turned
    into one). ``max_batch_tokens``:
    cap on padded steps (rows x (longest + 2)) per batch (None: the model's
    default, :func:`elmo_runtime.batching.max_tokens_for`). ``token_cache_mb``:
    MiB for the vectors of tokens seen before (0: off). ``stateful``: carry
    LSTM states across batches by row. ``batch_size``: sentences per forward
    pass. ``max_sentence_tokens``: the most tokens a sentence may have
    (:data:`elmo_runtime.corpus.MAX_TOKENS` by default). ``cpu_memory_arena``:
    onnxruntime's CPU memory arena, shrunk after every run (off by default: tensors
    come from malloc, so memory follows the run; `elmo serve` turns it on). Raises SettingError
    (or MixError) for a value out of its range.
    """

    model: str | None = None
    path: str | None = None
    provider: str = "auto"
    threads: int | None = None
    mix: MixSpec = field(default_factory=MixSpec)
    max_batch_tokens: int | None = None
    token_cache_mb: float = DEFAULT_CACHE_MB
    stateful: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE
    max_sentence_tokens: int = MAX_TOKENS
    cpu_memory_arena: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.model, os.PathLike):
            object.__setattr__(self, "model", os.fspath(self.model))
        if self.model is not None and not isinstance(self.model, str):
            raise SettingError(f"model must be a name or a path, found {self.model!r}")
        if self.path is not None:
            object.__setattr__(self, "path", str(Path(self.path).absolute()))
        if self.provider not in PROVIDERS:
            raise SettingError(f"unknown provider {self.provider!r}; choose one of "
                               f"{', '.join(PROVIDERS)}")
        _positive_int("threads", self.threads)
        _positive_int("max_batch_tokens", self.max_batch_tokens)
        _positive_int("batch_size", self.batch_size, optional=False)
        _positive_int("max_sentence_tokens", self.max_sentence_tokens, optional=False)
        cache = self.token_cache_mb
        if (isinstance(cache, bool) or not isinstance(cache, (int, float))
                or not math.isfinite(cache) or cache < 0):
            raise SettingError(f"token_cache_mb must be a finite number >= 0 (MiB), found "
                               f"{cache!r}")
        for flag in ("stateful", "cpu_memory_arena"):
            if not isinstance(getattr(self, flag), bool):
                raise SettingError(f"{flag} must be True or False, found {getattr(self, flag)!r}")
        object.__setattr__(self, "mix", MixSpec.of(self.mix))

    def locate(self) -> ModelFile:
        """The model file: :attr:`path` when resolved (no registry look-up), else
        :attr:`model` resolved. Checked (sniffed) once here. Raises ModelError."""
        return locate(Path(self.path) if self.path is not None else self.model)

    def resolved(self, file: ModelFile | None = None) -> EmbedderSettings:
        """These settings with :attr:`path` set (from ``file`` if given, else located)."""
        file = self.locate() if file is None else file
        return replace(self, path=str(file.path.absolute()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the mix as :meth:`MixSpec.to_dict`)."""
        out = asdict(self)
        out["mix"] = self.mix.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EmbedderSettings:
        """The settings :meth:`to_dict` wrote (checked again)."""
        return cls(**{**data, "mix": MixSpec.of(data.get("mix"))})
