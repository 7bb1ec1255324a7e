#!/usr/bin/env python
"""Rebuild the bundled default model from scratch, and measure it.

    python recipes/build_default.py [--minutes 25] [--threads 1] [--work-dir build/default]
    python recipes/build_default.py --evaluate-only   # re-measure the perplexities

Steps: WordNet 3.0 (Debian package wordnet-base) → ``train.txt`` /
``heldout.txt`` / ``examples.txt`` and a vocabulary (every word seen at least
twice) → ``elmo train`` with the ``default`` preset until ``--minutes`` (it
is interrupted, which saves a checkpoint) or ``--epochs`` → fine-tuning on
the training example sentences (``elmo train --init-from``, ``--finetune-epochs``)
→ ``elmo export`` → ``elmo quantize`` (int8) → held-out perplexity of the
biLM and of a unigram baseline → the numbers section of the model card
(``runtime/elmo_runtime/models/MODEL_CARD.md``).

Writes ``runtime/elmo_runtime/models/default.onnx`` and
``default.int8.onnx`` (inside the runtime package, so installs ship them).
Needs the export extra (torch). The WordNet corpus and its held-out split are
``wordnet_corpus.py`` beside this script (the bundled model's data, not a library feature).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PRESET = "default"  # export/elmo_export/presets/default.json
MODEL_DIR = REPO / "runtime" / "elmo_runtime" / "models"
FP32_MODEL = MODEL_DIR / "default.onnx"
INT8_MODEL = MODEL_DIR / "default.int8.onnx"
CARD = MODEL_DIR / "MODEL_CARD.md"  # ships inside the runtime package
CARD_BEGIN, CARD_END = "<!-- build_default: begin -->", "<!-- build_default: end -->"
MIN_COUNT = 2  # words seen once in train.txt are <UNK>, so <UNK> is trained too
QUANTIZE_CHECK_SENTENCES = 200  # the first held-out sentences
# `elmo train` settings besides the preset, the corpus, the vocabulary and the stop.
COMMON_ARGS = ("--batch-size", "32", "--unroll", "20", "--samples", "2048", "--seed", "0",
               "--checkpoint-every", "100", "--log-every", "10")
TRAIN_ARGS = ("--lr", "3e-3", *COMMON_ARGS)
FINETUNE_ARGS = ("--lr", "1e-3", *COMMON_ARGS)


@dataclass(frozen=True)
class Paths:
    """Everything the build writes under ``--work-dir``."""

    work: Path

    @property
    def corpus(self) -> Path:
        return self.work / "corpus"

    @property
    def train_txt(self) -> Path:
        return self.corpus / "train.txt"

    @property
    def heldout_txt(self) -> Path:
        return self.corpus / "heldout.txt"

    @property
    def vocab(self) -> Path:
        return self.corpus / "vocab.txt"

    @property
    def examples_txt(self) -> Path:
        return self.corpus / "examples.txt"

    @property
    def train_dir(self) -> Path:
        return self.work / "train"

    @property
    def finetune_dir(self) -> Path:
        return self.work / "finetune"

    def final_dir(self) -> Path:
        """The checkpoint that is exported: the fine-tuned one when there is one."""
        return self.finetune_dir if self.finetune_dir.is_dir() else self.train_dir


def log(message: str) -> None:
    print(f"[build_default {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def read_sentences(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8") as f:
        return [line.split() for line in f]


# ---------------------------------------------------------------------------- steps


def build_corpus(paths: Paths, wordnet_dir: Path) -> dict[str, Any]:
    """train.txt, heldout.txt and vocab.txt; their sizes."""
    from elmo_export.train.data import build_vocab
    from wordnet_corpus import write_corpus  # recipes/wordnet_corpus.py, beside this script

    files = write_corpus(paths.corpus, wordnet_dir)
    counts = Counter(t for s in read_sentences(files.train) for t in s)
    kept = Counter({w: n for w, n in counts.items() if n >= MIN_COUNT})
    vocab = build_vocab(kept)
    vocab.write(paths.vocab)
    return {"train_sentences": files.train_sentences, "train_tokens": files.train_tokens,
            "heldout_sentences": files.heldout_sentences,
            "heldout_tokens": files.heldout_tokens, "vocab_size": len(vocab),
            "examples_sentences": files.examples_sentences,
            "examples_tokens": files.examples_tokens}


def run_elmo_train(args: list[str], minutes: float) -> float:
    """Run `elmo train` until it ends or ``minutes`` pass (then SIGINT: it checkpoints)."""
    log("elmo " + " ".join(args))
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "elmo_runtime.cli", *args])
    try:
        proc.wait(timeout=minutes * 60 if minutes > 0 else None)
    except subprocess.TimeoutExpired:
        log(f"{minutes:g} minutes are up: stopping training (it saves a checkpoint)")
        proc.send_signal(signal.SIGINT)
        proc.wait()
    except KeyboardInterrupt:  # Ctrl-C reached elmo train too: let it save its checkpoint
        proc.wait()
        raise
    if proc.returncode not in (0, 130):
        sys.exit(f"elmo train failed (exit status {proc.returncode})")
    return time.monotonic() - start


def train(paths: Paths, minutes: float, epochs: float, threads: int | None,
          resume: bool = False) -> float:
    """Pre-train on train.txt for ``minutes`` or ``epochs``; the seconds it took.

    With ``resume`` the checkpoint in the work directory goes on training (the
    optimizer, data position and random state all continue) up to ``epochs`` in all.
    """
    if paths.train_dir.exists() and not resume:
        shutil.rmtree(paths.train_dir)
    args = ["train", str(paths.train_txt), "--output-dir", str(paths.train_dir),
            "--options", PRESET, "--vocab", str(paths.vocab), "--epochs", str(epochs),
            *TRAIN_ARGS, *(["--threads", str(threads)] if threads else []),
            *(["--resume"] if resume else [])]
    return run_elmo_train(args, minutes)


def finetune(paths: Paths, epochs: float, threads: int | None) -> float:
    """Fine-tune the pre-trained checkpoint on examples.txt for ``epochs``; the seconds.

    Definitions are noun-phrase fragments ("a young person of either sex");
    what users embed are sentences, and the examples are WordNet's sentences.
    """
    if paths.finetune_dir.exists():
        shutil.rmtree(paths.finetune_dir)
    if epochs <= 0:
        return 0.0
    args = ["train", str(paths.examples_txt), "--output-dir", str(paths.finetune_dir),
            "--init-from", str(paths.train_dir), "--epochs", str(epochs), *FINETUNE_ARGS,
            *(["--threads", str(threads)] if threads else [])]
    return run_elmo_train(args, 0)


def export_and_quantize(paths: Paths) -> dict[str, object]:
    """default.onnx (parity-checked) and default.int8.onnx (cosine-checked)."""
    from elmo_export.train.checkpoint import export_checkpoint
    from elmo_runtime.quantize import quantize_model

    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    log(f"elmo export {paths.final_dir()} -o {FP32_MODEL}")
    parity = export_checkpoint(paths.final_dir(), FP32_MODEL)
    log(f"elmo quantize {FP32_MODEL} -o {INT8_MODEL} --mode int8 --check <first "
        f"{QUANTIZE_CHECK_SENTENCES} lines of {paths.heldout_txt}>")
    check = read_sentences(paths.heldout_txt)[:QUANTIZE_CHECK_SENTENCES]
    report = quantize_model(FP32_MODEL, INT8_MODEL, mode="int8", sentences=check)
    assert report.check is not None
    return {"parity": parity, "int8_cosine": [c.mean for c in report.check.layers],
            "fp32_bytes": FP32_MODEL.stat().st_size, "int8_bytes": INT8_MODEL.stat().st_size}


def evaluate(paths: Paths) -> dict[str, float]:
    """Held-out perplexity of the trained biLM (full softmax) and of the unigram baseline."""
    from elmo_export.train.checkpoint import load_checkpoint
    from elmo_export.train.lm import LanguageModel, unigram_perplexity
    from elmo_export.train.lm import evaluate as lm_perplexity

    ckpt = load_checkpoint(paths.final_dir())
    finetuned = paths.final_dir() != paths.train_dir
    pretrained = load_checkpoint(paths.train_dir) if finetuned else ckpt
    model = LanguageModel(ckpt["options"], ckpt["vocab"])
    model.load_state_dict(ckpt["model"])
    log(f"measuring the held-out perplexity of {ckpt['path']} (step {ckpt['step']}) …")
    start = time.monotonic()
    bilm = lm_perplexity(model, paths.heldout_txt)
    log(f"biLM perplexity {bilm:.1f} ({time.monotonic() - start:.0f} s)")
    unigram = unigram_perplexity([paths.train_txt], paths.heldout_txt, ckpt["vocab"])
    log(f"unigram perplexity {unigram:.1f}")
    return {"bilm_perplexity": bilm, "unigram_perplexity": unigram,
            "step": int(pretrained["step"]), "tokens_trained": int(pretrained["tokens"]),
            "finetune_step": int(ckpt["step"]) if finetuned else 0,
            "finetune_tokens": int(ckpt["tokens"]) if finetuned else 0}


# ---------------------------------------------------------------------------- the card


def card_numbers(numbers: dict[str, Any]) -> str:
    """The generated section of MODEL_CARD.md."""
    n = numbers
    mib = 2**20
    epochs = n["tokens_trained"] / (n["train_tokens"] + 2 * n["train_sentences"])
    ft_epochs = n["finetune_tokens"] / (n["examples_tokens"] + 2 * n["examples_sentences"])
    cosine = ", ".join(f"{c:.4f}" for c in n["int8_cosine"])
    rows = [
        ("training corpus", f"{n['train_sentences']:,} lines, {n['train_tokens']:,} tokens"),
        ("held-out corpus", f"{n['heldout_sentences']:,} example sentences, "
                            f"{n['heldout_tokens']:,} tokens"),
        ("vocabulary (softmax)", f"{n['vocab_size']:,} entries (words seen ≥ {MIN_COUNT} times "
                                 "+ `<S>`, `</S>`, `<UNK>`)"),
        ("training", f"{n['step']:,} steps, {n['tokens_trained']:,} token positions "
                     f"({epochs:.2f} epochs), {n['train_seconds'] / 60:.1f} min wall time"),
        ("fine-tuning corpus", f"{n['examples_sentences']:,} example sentences of the "
                               f"training corpus, {n['examples_tokens']:,} tokens"),
        ("fine-tuning", f"{n['finetune_step']:,} steps, {n['finetune_tokens']:,} token "
                        f"positions ({ft_epochs:.2f} epochs), "
                        f"{n['finetune_seconds'] / 60:.1f} min wall time, "
                        f"{n['finetune_threads']} threads" if n["finetune_step"] else
                        "none (`--finetune-epochs 0`)"),
        ("**held-out perplexity, biLM**", f"**{n['bilm_perplexity']:.1f}**"),
        ("held-out perplexity, unigram baseline", f"{n['unigram_perplexity']:.1f} "
         f"(biLM / unigram = {n['bilm_perplexity'] / n['unigram_perplexity']:.2f})"),
        ("`default.onnx` (fp32)", f"{n['fp32_bytes'] / mib:.1f} MiB; largest difference to "
                                  f"PyTorch at export {n['parity']:.2g}"),
        ("`default.int8.onnx`", f"{n['int8_bytes'] / mib:.1f} MiB; mean cosine to fp32 per "
                                f"layer: {cosine}"),
        ("both files", f"{(n['fp32_bytes'] + n['int8_bytes']) / mib:.1f} MiB"),
        ("whole build", f"{n['build_seconds'] / 60:.1f} min; {n['machine']}"),
    ]
    lines = ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines)


def update_card(numbers: dict[str, Any]) -> None:
    text = CARD.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(CARD_BEGIN) + ".*?" + re.escape(CARD_END), re.DOTALL)
    if not pattern.search(text):
        sys.exit(f"{CARD}: the markers {CARD_BEGIN} … {CARD_END} are missing")
    block = f"{CARD_BEGIN}\n{card_numbers(numbers)}\n{CARD_END}"
    CARD.write_text(pattern.sub(lambda _: block, text), encoding="utf-8")


def used_threads(threads: int | None) -> int:
    import torch

    return threads or torch.get_num_threads()


def machine(threads: int | None) -> str:
    import torch

    return (f"{os.cpu_count()} CPU cores, torch {torch.__version__}, "
            f"training threads: {used_threads(threads)}")


# ---------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=25.0,
                        help="training time budget (0: no limit) [default: 25]")
    parser.add_argument("--epochs", type=float, default=2.0,
                        help="stop after this many passes if the budget lasts [default: 2]")
    parser.add_argument("--threads", type=int, help="torch threads for training")
    parser.add_argument("--work-dir", type=Path, default=REPO / "build" / "default",
                        help="corpus and checkpoints [default: build/default]")
    parser.add_argument("--wordnet-dir", type=Path, default=Path("/usr/share/wordnet"))
    step = parser.add_mutually_exclusive_group()
    step.add_argument("--evaluate-only", action="store_true",
                      help="only print the perplexities of the build in --work-dir")
    step.add_argument("--resume", action="store_true",
                      help="keep the corpus and train the checkpoint in --work-dir for "
                      "--minutes more, then export, quantize, evaluate and rewrite the card")
    step.add_argument("--reuse-checkpoint", action="store_true",
                      help="keep the corpus and the pre-trained checkpoint in --work-dir; "
                      "fine-tune, export, quantize, evaluate and rewrite the card")
    parser.add_argument("--finetune-epochs", type=float, default=2.0,
                        help="passes over the example sentences after pre-training "
                        "(0: none) [default: 2]")
    args = parser.parse_args()
    paths = Paths(args.work_dir)
    numbers_path = paths.work / "numbers.json"

    from elmo_runtime.errors import ElmoError

    try:
        if args.evaluate_only:
            print(json.dumps(evaluate(paths), indent=2))
            return
        start = time.monotonic()
        numbers: dict[str, Any]
        if args.reuse_checkpoint or args.resume:
            if not numbers_path.is_file():
                sys.exit(f"{numbers_path}: no earlier build; run without --reuse-checkpoint "
                         "or --resume")
            numbers = json.loads(numbers_path.read_text(encoding="utf-8"))
        if args.resume:
            seconds = train(paths, args.minutes, args.epochs, args.threads, resume=True)
            numbers["train_seconds"] += seconds
            numbers["corpus_and_train_seconds"] += seconds
            numbers["machine"] = machine(args.threads)
            numbers_path.write_text(json.dumps(numbers, indent=2) + "\n", encoding="utf-8")
        elif not args.reuse_checkpoint:
            numbers = build_corpus(paths, args.wordnet_dir)
            log(f"corpus: {json.dumps(numbers)}")
            numbers["train_seconds"] = train(paths, args.minutes, args.epochs, args.threads)
            numbers["machine"] = machine(args.threads)
            numbers["corpus_and_train_seconds"] = time.monotonic() - start
            numbers_path.write_text(json.dumps(numbers, indent=2) + "\n", encoding="utf-8")
        if not paths.examples_txt.is_file():  # a work directory from before fine-tuning
            numbers.update(build_corpus(paths, args.wordnet_dir))
        numbers["finetune_seconds"] = finetune(paths, args.finetune_epochs, args.threads)
        numbers["finetune_threads"] = used_threads(args.threads)
        start = time.monotonic()
        numbers.update(export_and_quantize(paths))
        numbers.update(evaluate(paths))
        numbers["build_seconds"] = (numbers["corpus_and_train_seconds"]
                                    + numbers["finetune_seconds"] + time.monotonic() - start)
    except ElmoError as e:
        sys.exit(f"Error: {e}")
    numbers_path.write_text(json.dumps(numbers, indent=2) + "\n", encoding="utf-8")
    update_card(numbers)
    log(f"done; numbers in {numbers_path} and {CARD}")


if __name__ == "__main__":
    main()
