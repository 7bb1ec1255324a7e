"""The training loop: bilm-tf's objective, exact resume, data-parallel processes.

Run it through ``elmo train`` or :func:`train`. Under ``torchrun`` (or any
launcher that sets ``WORLD_SIZE``/``RANK``/``MASTER_ADDR``) each process
trains its own ``batch_size`` rows on its own share of the sentences and
gradients are averaged with DistributedDataParallel (gloo on CPU).

The rooms: settings in :mod:`.config`, the run's state and its
checkpoint in :mod:`.run`, processes and signals in
:mod:`.processes`, the progress line and ``metrics.jsonl`` in
:mod:`.progress`; here the loop and its guard against divergence.

**Divergence.** A step whose loss (the mean over the processes) is not
finite, or exceeds ``EXPLODE_FACTOR`` × ln(vocabulary size) (four times the
loss of a uniform guess, which a freshly initialized model starts near), or
whose gradient norm is not finite, stops the run with
:class:`TrainingDiverged` before that step changes any weight. Nothing is
saved then. A checkpoint written during the run replaces ``checkpoint.pt``
only once the next step's loss is sound (until then it waits as
``checkpoint.next.pt``), so ``checkpoint.pt`` holds the last weights known
not to have diverged (the message names its step), and ``--resume`` with a
lower ``--lr`` continues from it.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from elmo_runtime.errors import ElmoError

from .config import DEFAULT_LR, OPTIMIZERS, TrainConfig, tokenizer_for
from .lm import LanguageModel, batch_tensors
from .processes import Processes, stop_on_signal
from .progress import METRICS_NAME, Progress
from .run import Run, setup, total_steps

__all__ = ["DEFAULT_LR", "EXPLODE_FACTOR", "METRICS_NAME", "OPTIMIZERS", "TrainConfig",
           "TrainingDiverged", "TrainingInterrupted", "tokenizer_for", "train"]

EXPLODE_FACTOR = 4.0  # a loss above this × ln(vocabulary size) is divergence


class TrainingInterrupted(ElmoError):
    """Training stopped on a signal after saving a resumable checkpoint."""


class TrainingDiverged(ElmoError):
    """The loss or the gradients blew up; the run stopped without saving."""


def divergence(loss: float, vocab_size: int) -> str | None:
    """Why ``loss`` (mean token NLL, nats) means divergence, or None when it does not."""
    if not math.isfinite(loss):
        return f"the loss is {loss}"
    limit = EXPLODE_FACTOR * math.log(vocab_size)
    if loss > limit:
        return (f"the loss {loss:.4g} exceeds {limit:.3g} ({EXPLODE_FACTOR:g} × ln {vocab_size}, "
                f"{EXPLODE_FACTOR:g} times the loss of a uniform guess)")
    return None


def _diverged(run: Run, why: str) -> TrainingDiverged:
    run.discard()
    kept = (f"{run.checkpoint} still holds step {run.saved_step}" if run.saved_step is not None
            else "no checkpoint was written")
    return TrainingDiverged(f"training diverged at step {run.step + 1}: {why}; stopped without "
                            f"saving ({kept}); lower --lr (or --clip-norm) and --resume")


def train(config: TrainConfig) -> LanguageModel:
    """Train (or resume) a biLM; checkpoints and metrics go to ``config.output_dir``.

    Returns the trained model. Raises ElmoError for bad input,
    TrainingInterrupted after a clean stop on SIGINT/SIGTERM and
    TrainingDiverged when the loss blows up (see the module docstring).
    """
    threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    procs = Processes.start()
    finished = False
    try:
        run = setup(config, procs)
        try:
            model = _loop(run)
            finished = True
            return model
        finally:
            run.close()
    finally:
        procs.stop(finished)
        torch.set_num_threads(threads)


def _loop(run: Run) -> LanguageModel:
    config, procs, model = run.config, run.procs, run.model
    total = total_steps(config, run.corpus, procs.world)
    if run.step >= total:
        raise ElmoError(f"the checkpoint is at step {run.step} and this run asks for {total} "
                        "steps in all; ask for more --steps or --epochs")
    ddp = torch.nn.parallel.DistributedDataParallel(model) if procs.world > 1 else model
    progress = Progress(total, run.step, config.progress and procs.main)
    progress.perplexity(run.last_perplexity)
    tokens_per_step = config.batch_size * config.unroll * procs.world
    try:
        if not run.resumed:
            run.evaluate()
            progress.perplexity(run.last_perplexity)
        with stop_on_signal() as stop_requested:
            losses: list[float] = []
            busy = 0.0  # seconds spent in training steps since the last record
            while run.step < total:
                t_step = time.monotonic()
                batch = run.streams.next_batch()
                assert batch is not None  # training streams never run dry
                char_ids, inputs, targets, mask = batch_tensors(batch)
                loss, c, h = ddp(char_ids, inputs, targets, mask, *run.state)
                mean_loss, stop = procs.mean_and_any(loss.item(), stop_requested())
                why = divergence(mean_loss, len(model.vocab))
                if why is not None:
                    run.metrics.log({"step": run.step + 1, "diverged": str(mean_loss)})
                    raise _diverged(run, why)
                run.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.clips:
                    norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                                config.clip_norm))
                    if not math.isfinite(norm):
                        raise _diverged(run, f"the gradient norm is {norm}")
                run.confirm()  # the weights of a pending checkpoint gave a sound step
                run.optimizer.step()
                run.state = (c.detach(), h.detach())
                run.step += 1
                run.tokens += tokens_per_step
                losses.append(mean_loss)
                busy += time.monotonic() - t_step
                speed = tokens_per_step * len(losses) / max(busy, 1e-9)
                if run.step % config.log_every == 0 or run.step == total or stop:
                    run.metrics.log({"step": run.step, "epoch": run.streams.order.epoch,
                                     "train_loss": float(np.mean(losses)),
                                     "tokens_per_s": speed, "tokens": run.tokens})
                    losses, busy = [], 0.0
                if run.step % config.eval_every == 0 or run.step == total:
                    run.evaluate()  # before the line, so the final line shows this one
                    progress.perplexity(run.last_perplexity)
                progress.update(run.step, mean_loss, speed, force=run.step == total)
                if run.step % config.checkpoint_every == 0 or run.step == total or stop:
                    run.save(final=run.step == total or stop)
                if stop:
                    raise TrainingInterrupted(
                        f"interrupted at step {run.step}; checkpoint saved in "
                        f"{run.checkpoint}; continue with --resume")
    finally:
        progress.close()
    return model
