"""The settings of a training run (`elmo train`'s options), checked once.

Choices, measured on 2 CPU cores (see the report in the training issue):
Adam (lr 1e-3) reaches a given perplexity in fewer steps than bilm-tf's
Adagrad (lr 0.2, also available); gradients are clipped to a global norm
of 10 as in bilm-tf (``clip_norm`` 0: no clipping); dropout 0.1 on every
LSTM input and on the top output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from elmo_runtime.errors import ElmoError
from elmo_runtime.format.options import ElmoOptions

from .data import Tokenizer

if TYPE_CHECKING:  # imports without torch: `elmo train --help` and its option choices
    import torch

OPTIMIZERS = ("adam", "adagrad")
DEFAULT_LR = {"adam": 1e-3, "adagrad": 0.2}
NO_CLIPPING = 0.0  # clip_norm value that turns gradient clipping off
# Settings a resumed run must share with its checkpoint (others may change).
FIXED_ON_RESUME = ("batch_size", "unroll", "seed", "tokenize", "optimizer")


@dataclass(frozen=True)
class TrainConfig:
    """Everything `elmo train` takes. ``steps`` wins over ``epochs`` (default 1 epoch).

    Raises ElmoError (one line naming the setting) for a value out of range.
    """

    corpus: tuple[str, ...]
    output_dir: str
    options: ElmoOptions
    vocab_file: str | None = None
    vocab_size: int | None = None
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 32  # rows per process
    unroll: int = 20
    optimizer: str = "adam"
    lr: float | None = None  # None: DEFAULT_LR of the optimizer
    seed: int = 0
    dropout: float = 0.1
    clip_norm: float = 10.0  # largest global gradient norm; NO_CLIPPING (0) turns clipping off
    n_samples: int = 8192
    eval_file: str | None = None
    eval_every: int = 500
    checkpoint_every: int = 500
    log_every: int = 10
    tokenize: bool = False
    threads: int | None = None  # torch intra-op threads; None: torch's default
    resume: bool = False
    init_from: str | None = None  # a checkpoint whose weights start this run (fine-tuning)
    progress: bool = True
    overwrite: bool = False  # a new run may replace options.json, vocab.txt, metrics.jsonl

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ElmoError(f"unknown optimizer {self.optimizer!r}; choose one of {OPTIMIZERS}")
        for name in ("batch_size", "unroll", "n_samples", "eval_every", "checkpoint_every",
                     "log_every"):
            if getattr(self, name) < 1:
                raise ElmoError(f"{name} must be at least 1, found {getattr(self, name)}")
        if self.steps is not None and self.steps < 1:
            raise ElmoError(f"steps must be at least 1, found {self.steps}")
        if self.epochs is not None and not self.epochs > 0:
            raise ElmoError(f"epochs must be positive, found {self.epochs}")
        if not 0.0 <= self.dropout < 1.0:
            raise ElmoError(f"dropout must be in [0, 1), found {self.dropout}")
        if not self.clip_norm >= 0.0:  # also refuses NaN
            raise ElmoError(f"clip_norm must be positive, or 0 for no clipping; "
                            f"found {self.clip_norm}")
        if self.lr is not None and not self.lr > 0.0:
            raise ElmoError(f"lr must be positive, found {self.lr}")
        if self.init_from and (self.resume or self.vocab_file or self.vocab_size):
            raise ElmoError("init_from takes the checkpoint's vocabulary and starts a new run: "
                            "it goes with neither resume, vocab_file nor vocab_size")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    @property
    def clips(self) -> bool:
        """Whether gradients are clipped (``clip_norm`` is not 0)."""
        return self.clip_norm != NO_CLIPPING

    def to_dict(self) -> dict[str, Any]:
        """The settings as stored in a checkpoint (options are stored apart)."""
        d = asdict(self)
        del d["options"], d["resume"], d["progress"], d["output_dir"], d["threads"]
        del d["overwrite"]
        d["corpus"] = list(self.corpus)
        return d


def tokenizer_for(tokenize: bool) -> Tokenizer:
    """Whitespace splitting, or the runtime's tokenizer for raw text."""
    if not tokenize:
        return str.split
    from elmo_runtime.tokenize import tokenize as tokenize_text

    return tokenize_text


def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Adam, or bilm-tf's Adagrad (initial accumulator 1.0), at the configured rate."""
    import torch

    if config.optimizer == "adagrad":  # bilm-tf's choice
        return torch.optim.Adagrad(model.parameters(), lr=config.learning_rate,
                                   initial_accumulator_value=1.0)
    return torch.optim.Adam(model.parameters(), lr=config.learning_rate)
