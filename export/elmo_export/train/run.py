"""A training run's state, built from its settings: fresh, resumed or fine-tuned.

:func:`setup` checks the output directory, the checkpoint to resume (or the
one to fine-tune from) against the settings, reads the corpus, chooses the
vocabulary and returns a :class:`Run`: the model, optimizer, data streams and
carried LSTM states, which it saves to and restores from a checkpoint.
"""

from __future__ import annotations

import math
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from elmo_runtime.errors import ElmoError
from elmo_runtime.files import check_output, publish, write_text_atomic

from .checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    load_checkpoint,
    options_diff,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import FIXED_ON_RESUME, TrainConfig, make_optimizer, tokenizer_for
from .data import Corpus, ShuffledOrder, Streams, Vocab, build_vocab, scan_corpus
from .lm import LanguageModel, evaluate
from .processes import Processes
from .progress import METRICS_NAME, MetricsLog

PENDING_NAME = "checkpoint.next.pt"  # a checkpoint written, not yet confirmed by the next loss


def prepare_output_dir(path: Path) -> None:
    """Create ``path`` and prove it writable, or raise one clear error."""
    if path.exists() and not path.is_dir():
        raise ElmoError(f"{path}: the output directory is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise ElmoError(f"{path}: cannot write to the output directory ({e.strerror})") from None


def check_resume(config: TrainConfig, ckpt: dict[str, Any], corpus: Corpus, world: int) -> None:
    """Refuse to resume a checkpoint that does not belong to this run."""
    where = ckpt["path"]
    diff = options_diff(ckpt["options"], config.options)
    if diff:
        raise CheckpointError(f"{where}: trained with other options ({diff}); resume with the "
                              "checkpoint's options or start a new output directory")
    saved = ckpt["config"]
    for name in FIXED_ON_RESUME:
        if saved[name] != getattr(config, name):
            raise CheckpointError(f"{where}: cannot resume with {name} {getattr(config, name)!r}"
                                  f", the checkpoint used {saved[name]!r}")
    if ckpt["world"] != world:
        raise CheckpointError(f"{where}: written by {ckpt['world']} training processes; "
                              f"resume with as many (this run has {world})")
    if ckpt["corpus"] != corpus.fingerprint():
        raise CheckpointError(f"{where}: the corpus changed since the checkpoint "
                              f"({ckpt['corpus']} then, {corpus.fingerprint()} now)")
    if config.vocab_file and Vocab.from_file(config.vocab_file).tokens != ckpt["vocab"].tokens:
        raise CheckpointError(f"{where}: {config.vocab_file} is not the checkpoint's vocabulary")


def load_init(config: TrainConfig) -> dict[str, Any]:
    """The checkpoint ``init_from`` names, checked against this run's options."""
    init = load_checkpoint(config.init_from)
    diff = options_diff(init["options"], config.options)
    if diff:
        raise CheckpointError(f"{init['path']}: trained with other options ({diff}); "
                              "fine-tune with the checkpoint's options")
    return init


def total_steps(config: TrainConfig, corpus: Corpus, world: int) -> int:
    """``steps``, or the steps that cover ``epochs`` passes over the corpus."""
    if config.steps is not None:
        return config.steps
    positions = corpus.n_tokens + 2 * len(corpus)  # every sentence adds <S> and </S>
    per_step = config.batch_size * config.unroll * world
    return max(1, math.ceil((config.epochs or 1.0) * positions / per_step))


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Run:
    """The mutable state of one training run, and what it writes."""

    config: TrainConfig
    procs: Processes
    model: LanguageModel
    optimizer: torch.optim.Optimizer
    streams: Streams
    corpus: Corpus
    out: Path
    state: tuple[torch.Tensor, torch.Tensor]
    metrics: MetricsLog
    step: int = 0
    tokens: int = 0
    saved_step: int | None = None  # the step of the confirmed checkpoint (None: none yet)
    pending_step: int | None = None  # the step of PENDING_NAME, awaiting the next step's loss
    last_perplexity: float | None = None
    resumed: bool = field(default=False)

    @property
    def checkpoint(self) -> Path:
        return self.out / CHECKPOINT_NAME

    @property
    def pending(self) -> Path:
        return self.out / PENDING_NAME

    def evaluate(self) -> None:
        """Held-out perplexity (main process, when an evaluation file is set), logged."""
        if not (self.config.eval_file and self.procs.main):
            return
        ppl = evaluate(self.model, self.config.eval_file, self.config.batch_size,
                       self.config.unroll, tokenizer_for(self.config.tokenize))
        self.last_perplexity = ppl
        self.metrics.log({"step": self.step, "heldout_perplexity": ppl})

    def save(self, final: bool) -> None:
        """Write the checkpoint (every process takes part: states are gathered).

        A ``final`` one (last step, or a stop) replaces ``checkpoint.pt`` at
        once. Any other goes to ``checkpoint.next.pt`` and replaces
        ``checkpoint.pt`` only when the next step's loss shows that its weights
        did not diverge (:meth:`confirm`), so ``checkpoint.pt`` never holds
        weights that blew up.
        """
        c, h = self.state
        ranks = self.procs.gather({**rng_state(), "state_c": c, "state_h": h,
                                   "data": torch.tensor(self.streams.state(), dtype=torch.int64)})
        if final:
            self.saved_step, self.pending_step = self.step, None
        else:
            self.pending_step = self.step
        if not self.procs.main:
            return
        save_checkpoint(self.checkpoint if final else self.pending, {
            "options": self.model.bilm.options.to_dict(),
            "vocab": self.model.vocab.tokens,
            "config": self.config.to_dict(),
            "corpus": self.corpus.fingerprint(),
            "world": self.procs.world,
            "step": self.step,
            "tokens": self.tokens,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ranks": ranks,
        })
        if final:
            self.pending.unlink(missing_ok=True)

    def confirm(self) -> None:
        """The weights of the pending checkpoint gave a sound loss: make it ``checkpoint.pt``."""
        if self.pending_step is None:
            return
        if self.procs.main:
            publish(self.pending, self.checkpoint)
        self.saved_step, self.pending_step = self.pending_step, None

    def discard(self) -> None:
        """Drop the pending checkpoint (its weights diverged)."""
        if self.pending_step is not None and self.procs.main:
            self.pending.unlink(missing_ok=True)
        self.pending_step = None

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue exactly where ``ckpt`` stopped (weights, optimizer, data, RNGs, states)."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.learning_rate
        mine = {k: v[self.procs.rank] for k, v in ckpt["ranks"].items()}
        set_rng_state(mine)
        self.streams.restore(mine["data"].tolist())
        self.state = (mine["state_c"], mine["state_h"])
        self.step, self.tokens = int(ckpt["step"]), int(ckpt["tokens"])
        self.saved_step, self.resumed = self.step, True

    def close(self) -> None:
        self.corpus.close()
        self.metrics.close()


# What a new run writes beside its checkpoint.
RUN_FILES = ("options.json", "vocab.txt", METRICS_NAME)


def _same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_run_files(out: Path, config: TrainConfig) -> None:
    """ElmoError when a new run would replace a file already in ``out`` (a published
    model's options.json or vocab.txt, another run's metrics) and ``config.overwrite`` is
    not set; an input (corpus, --vocab, --eval-file) is never replaced. A ``--vocab``
    that is ``out/vocab.txt`` itself is the run's vocabulary already: it is kept as it
    is. Called before the corpus is read."""
    inputs = [*config.corpus, *(f for f in (config.vocab_file, config.eval_file) if f)]
    for name in RUN_FILES:
        target = out / name
        if name == "vocab.txt" and config.vocab_file and _same_file(config.vocab_file, target):
            continue
        check_output(target, inputs, config.overwrite)


def setup(config: TrainConfig, procs: Processes) -> Run:
    """The run ``config`` asks for; raises ElmoError when it cannot start or resume."""
    out = Path(config.output_dir)
    prepare_output_dir(out)
    ckpt = None
    if config.resume:
        ckpt = load_checkpoint(out / CHECKPOINT_NAME)
    elif (out / CHECKPOINT_NAME).exists():
        raise ElmoError(f"{out} already holds a checkpoint; pass --resume to continue it "
                        "or choose another --output-dir")
    if ckpt is None:
        check_run_files(out, config)
    init = load_init(config) if config.init_from else None
    build = ckpt is None and init is None and config.vocab_file is None
    counts: Counter[str] = Counter()
    corpus = scan_corpus(config.corpus, tokenizer_for(config.tokenize), counts if build else None)
    if ckpt is not None:
        check_resume(config, ckpt, corpus, procs.world)
        vocab = ckpt["vocab"]
    elif init is not None:
        vocab = init["vocab"]
    elif config.vocab_file is not None:
        vocab = Vocab.from_file(config.vocab_file)
    else:
        vocab = build_vocab(counts, config.vocab_size)
    if config.eval_file:
        scan_corpus([config.eval_file], tokenizer_for(config.tokenize), what="evaluation").close()

    options = config.options
    seed_all(config.seed)  # the same initial weights in every process
    model = LanguageModel(options, vocab, config.dropout, config.n_samples)
    order = ShuffledOrder(len(corpus), config.seed, procs.rank, procs.world)
    streams = Streams(corpus, vocab, order, config.batch_size, config.unroll,
                      options.max_characters_per_token)
    run = Run(config, procs, model, make_optimizer(config, model), streams, corpus, out,
              model.bilm.zero_state(config.batch_size), MetricsLog(out, procs.main))
    if ckpt is not None:
        run.restore(ckpt)
        run.metrics.open(resumed_step=run.step)
        last = run.metrics.last("heldout_perplexity")
        run.last_perplexity = float(last) if last is not None else None
    else:
        if init is not None:
            model.load_state_dict(init["model"])
        seed_all(config.seed + procs.rank)  # different dropout and samples per process
        if procs.main:
            if not (config.vocab_file and _same_file(config.vocab_file, out / "vocab.txt")):
                vocab.write(out / "vocab.txt")  # never the --vocab file it was read from
            write_text_atomic(out / "options.json", options.to_json() + "\n")
            if config.overwrite:
                (out / METRICS_NAME).unlink(missing_ok=True)  # not appended to another run's
        run.metrics.open(resumed_step=None)
    return run
