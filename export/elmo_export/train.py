"""The training loop: bilm-tf's objective, exact resume, data-parallel processes.

Run it through ``elmo train`` or :func:`train`. Under ``torchrun`` (or any
launcher that sets ``WORLD_SIZE``/``RANK``/``MASTER_ADDR``) each process
trains its own ``batch_size`` rows on its own share of the sentences and
gradients are averaged with DistributedDataParallel (gloo on CPU).

Choices, measured on 2 CPU cores (see the report in the training issue):
Adam (lr 1e-3) reaches a given perplexity in fewer steps than bilm-tf's
Adagrad (lr 0.2, also available); gradients are clipped to a global norm
of 10 as in bilm-tf; dropout 0.1 on every LSTM input and on the top output.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
import torch.distributed as dist
from elmo_runtime.errors import ElmoError
from elmo_runtime.files import atomic_path
from elmo_runtime.spec.options import ElmoOptions

from .checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    load_checkpoint,
    options_diff,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .data import Corpus, ShuffledOrder, Streams, Tokenizer, Vocab, build_vocab, scan_corpus
from .lm import LanguageModel, batch_tensors, evaluate

OPTIMIZERS = ("adam", "adagrad")
DEFAULT_LR = {"adam": 1e-3, "adagrad": 0.2}
METRICS_NAME = "metrics.jsonl"
# Settings a resumed run must share with its checkpoint (others may change).
FIXED_ON_RESUME = ("batch_size", "unroll", "seed", "tokenize", "optimizer")


class TrainingInterrupted(ElmoError):
    """Training stopped on a signal after saving a resumable checkpoint."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything `elmo train` takes. ``steps`` wins over ``epochs`` (default 1 epoch)."""

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
    clip_norm: float = 10.0
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
        if self.init_from and (self.resume or self.vocab_file or self.vocab_size):
            raise ElmoError("init_from takes the checkpoint's vocabulary and starts a new run: "
                            "it goes with neither resume, vocab_file nor vocab_size")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    def to_dict(self) -> dict[str, Any]:
        """The settings as stored in a checkpoint (options are stored apart)."""
        d = asdict(self)
        del d["options"], d["resume"], d["progress"], d["output_dir"], d["threads"]
        d["corpus"] = list(self.corpus)
        return d


def tokenizer_for(tokenize: bool) -> Tokenizer:
    """Whitespace splitting, or the runtime's tokenizer for raw text."""
    if not tokenize:
        return str.split
    from elmo_runtime.tokenize import tokenize as tokenize_text

    return tokenize_text


# ---------------------------------------------------------------------------- processes


@dataclass
class Processes:
    """This process's place among the data-parallel training processes."""

    rank: int = 0
    world: int = 1
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def start(cls) -> Processes:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        owns = not dist.is_initialized()
        if owns:
            dist.init_process_group("gloo")
        return cls(dist.get_rank(), dist.get_world_size(), owns)

    def stop(self) -> None:
        if self.owns_group:
            dist.destroy_process_group()

    def mean_and_any(self, value: float, flag: bool) -> tuple[float, bool]:
        """Mean of ``value`` and OR of ``flag`` over the processes."""
        if self.world == 1:
            return value, flag
        t = torch.tensor([value, float(flag)], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t[0]) / self.world, bool(t[1] > 0)

    def gather(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each tensor stacked over the processes (rank order) on a new axis 0."""
        if self.world == 1:
            return {k: v.unsqueeze(0) for k, v in tensors.items()}
        out = {}
        for k, v in tensors.items():
            parts = [torch.empty_like(v) for _ in range(self.world)]
            dist.all_gather(parts, v.contiguous())
            out[k] = torch.stack(parts)
        return out


# ---------------------------------------------------------------------------- reporting


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


class Progress:
    """One status line on stderr: redrawn on a terminal, a line every 30 s in a log."""

    def __init__(self, total: int, start_step: int, enabled: bool, stream: TextIO = sys.stderr):
        self.total, self.start_step, self.enabled, self.stream = total, start_step, enabled, stream
        self.tty = stream.isatty()
        self.t0 = self.last = time.monotonic()
        self.extra: dict[str, str] = {}

    def update(self, step: int, loss: float, tokens_per_s: float, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < (0.25 if self.tty else 30.0):
            return
        self.last = now
        done = step - self.start_step
        eta = (now - self.t0) / done * (self.total - step) if done else 0.0
        parts = [f"step {step}/{self.total} ({100 * step / self.total:.0f}%)",
                 f"loss {loss:.3f}", f"{tokens_per_s:,.0f} tok/s", f"ETA {_duration(eta)}",
                 *self.extra.values()]
        line = " | ".join(parts)
        self.stream.write(f"\r{line}\033[K" if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _trim_metrics(path: Path, step: int) -> None:
    """Drop records past ``step`` (written after the checkpoint a run resumes from)."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    keep = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(keep), encoding="utf-8")


@contextmanager
def _stop_on_signal() -> Iterator[Callable[[], bool]]:
    """SIGINT/SIGTERM ask for a clean stop (checkpoint, then exit); a second SIGINT aborts."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return

    def handler(signum: int, frame: Any) -> None:
        if requested.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        requested.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested.is_set
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# ---------------------------------------------------------------------------- setup


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


def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "adagrad":  # bilm-tf's choice
        return torch.optim.Adagrad(model.parameters(), lr=config.learning_rate,
                                   initial_accumulator_value=1.0)
    return torch.optim.Adam(model.parameters(), lr=config.learning_rate)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------- the loop


@dataclass
class _Run:
    """The mutable state of one training run, and what it writes."""

    config: TrainConfig
    procs: Processes
    model: LanguageModel
    optimizer: torch.optim.Optimizer
    streams: Streams
    corpus: Corpus
    out: Path
    state: tuple[torch.Tensor, torch.Tensor]
    step: int = 0
    tokens: int = 0
    metrics: TextIO | None = None
    last_perplexity: float | None = None

    def log(self, record: dict[str, Any]) -> None:
        if self.metrics is not None:
            self.metrics.write(json.dumps(record) + "\n")
            self.metrics.flush()

    def evaluate(self) -> None:
        if not (self.config.eval_file and self.procs.main):
            return
        ppl = evaluate(self.model, self.config.eval_file, self.config.batch_size,
                       self.config.unroll, tokenizer_for(self.config.tokenize))
        self.last_perplexity = ppl
        self.log({"step": self.step, "heldout_perplexity": ppl})

    def save(self) -> None:
        c, h = self.state
        ranks = self.procs.gather({**rng_state(), "state_c": c, "state_h": h,
                                   "data": torch.tensor(self.streams.state(), dtype=torch.int64)})
        if not self.procs.main:
            return
        save_checkpoint(self.out / CHECKPOINT_NAME, {
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

    def restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.learning_rate
        mine = {k: v[self.procs.rank] for k, v in ckpt["ranks"].items()}
        set_rng_state(mine)
        self.streams.restore(mine["data"].tolist())
        self.state = (mine["state_c"], mine["state_h"])
        self.step, self.tokens = int(ckpt["step"]), int(ckpt["tokens"])


def train(config: TrainConfig) -> LanguageModel:
    """Train (or resume) a biLM; checkpoints and metrics go to ``config.output_dir``.

    Returns the trained model. Raises ElmoError for bad input and
    TrainingInterrupted after a clean stop on SIGINT/SIGTERM.
    """
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    procs = Processes.start()
    try:
        return _train(config, procs)
    finally:
        procs.stop()
        torch.set_num_threads(threads)


def _setup(config: TrainConfig, procs: Processes) -> tuple[_Run, dict[str, Any] | None]:
    out = Path(config.output_dir)
    prepare_output_dir(out)
    ckpt = None
    if config.resume:
        ckpt = load_checkpoint(out / CHECKPOINT_NAME)
    elif (out / CHECKPOINT_NAME).exists():
        raise ElmoError(f"{out} already holds a checkpoint; pass --resume to continue it "
                        "or choose another --output-dir")
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
    _seed_all(config.seed)  # the same initial weights in every process
    model = LanguageModel(options, vocab, config.dropout, config.n_samples)
    order = ShuffledOrder(len(corpus), config.seed, procs.rank, procs.world)
    streams = Streams(corpus, vocab, order, config.batch_size, config.unroll,
                      options.max_characters_per_token)
    run = _Run(config, procs, model, make_optimizer(config, model), streams, corpus, out,
               model.bilm.zero_state(config.batch_size))
    if ckpt is not None:
        run.restore(ckpt)
    else:
        if init is not None:
            model.load_state_dict(init["model"])
        _seed_all(config.seed + procs.rank)  # different dropout and samples per process
        if procs.main:
            vocab.write(out / "vocab.txt")
            (out / "options.json").write_text(options.to_json() + "\n", encoding="utf-8")
    return run, ckpt


def _train(config: TrainConfig, procs: Processes) -> LanguageModel:
    run, ckpt = _setup(config, procs)
    total = total_steps(config, run.corpus, procs.world)
    if run.step >= total:
        run.corpus.close()
        raise ElmoError(f"the checkpoint is at step {run.step} and this run asks for {total} "
                        "steps in all; ask for more --steps or --epochs")
    model = run.model
    ddp = (torch.nn.parallel.DistributedDataParallel(model) if procs.world > 1 else model)
    metrics_path = run.out / METRICS_NAME
    if procs.main:
        if ckpt is not None:
            _trim_metrics(metrics_path, run.step)
        run.metrics = open(metrics_path, "a", encoding="utf-8")  # noqa: SIM115 (closed below)
    progress = Progress(total, run.step, config.progress and procs.main)
    tokens_per_step = config.batch_size * config.unroll * procs.world
    try:
        if ckpt is None:
            run.evaluate()
        with _stop_on_signal() as stop_requested:
            losses: list[float] = []
            busy = 0.0  # seconds spent in training steps since the last record
            while run.step < total:
                t_step = time.monotonic()
                batch = run.streams.next_batch()
                assert batch is not None  # training streams never run dry
                char_ids, inputs, targets, mask = batch_tensors(batch)
                loss, c, h = ddp(char_ids, inputs, targets, mask, *run.state)
                run.state = (c.detach(), h.detach())
                run.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
                run.optimizer.step()
                run.step += 1
                run.tokens += tokens_per_step
                mean_loss, stop = procs.mean_and_any(loss.item(), stop_requested())
                losses.append(mean_loss)
                busy += time.monotonic() - t_step
                speed = tokens_per_step * len(losses) / max(busy, 1e-9)
                if run.step % config.log_every == 0 or run.step == total or stop:
                    run.log({"step": run.step, "epoch": run.streams.order.epoch,
                             "train_loss": float(np.mean(losses)), "tokens_per_s": speed,
                             "tokens": run.tokens})
                    losses, busy = [], 0.0
                progress.update(run.step, mean_loss, speed, force=run.step == total)
                if run.step % config.eval_every == 0 or run.step == total:
                    run.evaluate()
                    if run.last_perplexity is not None:
                        progress.extra["ppl"] = f"held-out ppl {run.last_perplexity:.1f}"
                if run.step % config.checkpoint_every == 0 or run.step == total or stop:
                    run.save()
                if stop:
                    raise TrainingInterrupted(
                        f"interrupted at step {run.step}; checkpoint saved in "
                        f"{run.out / CHECKPOINT_NAME}; continue with --resume")
    finally:
        progress.close()
        run.corpus.close()
        if run.metrics is not None:
            run.metrics.close()
    return model
