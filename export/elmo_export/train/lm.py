"""The bilm-tf training objective around a :class:`BiLM`, and exact evaluation.

Forward and backward LMs share the char CNN and one softmax (an output
embedding and a bias over the vocabulary, applied to P-dim top-layer
outputs); the loss is the mean of the two directions' mean token losses.
Training uses a sampled softmax when the vocabulary is larger than the
number of samples; evaluation always uses the full softmax.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from elmo_runtime.format.options import ElmoOptions
from torch import Tensor, nn

from ..pytorch.modules import BiLM
from .data import EOS, Batch, SequentialOrder, Streams, Tokenizer, Vocab, scan_corpus

HIGHWAY_CARRY_BIAS = -2.0  # bilm-tf: highways start close to the identity
FULL_SOFTMAX_CHUNK = 1 << 24  # logits computed at once by the full softmax (floats)


class SampledSoftmax(nn.Module):
    """Softmax over ``vocab_size`` words of ``dim``-vectors, sampled while training.

    Negative words are drawn with replacement from the log-uniform (Zipf)
    distribution, which suits ids sorted by falling frequency (as built
    vocabularies are): ``q(k) = log((k + 2) / (k + 1)) / log(V + 1)``. One set
    of samples serves the whole batch; logits get the ``-log(S·q)`` correction
    and samples equal to a row's target are removed (TF's sampled_softmax_loss).
    """

    def __init__(self, vocab_size: int, dim: int, n_samples: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(vocab_size, dim) / math.sqrt(dim))
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.n_samples = n_samples

    def log_expected_count(self, ids: Tensor) -> Tensor:
        v = self.weight.shape[0]
        ids = ids.to(torch.float64)
        q = torch.log((ids + 2) / (ids + 1)) / math.log(v + 1)
        return torch.log(q * self.n_samples).to(self.weight.dtype)

    def forward(self, hidden: Tensor, targets: Tensor) -> Tensor:
        """Per-row negative log-likelihood (sampled estimate while training)."""
        v = self.weight.shape[0]
        if not self.training or self.n_samples >= v:
            return self.full_nll(hidden, targets)
        u = torch.rand(self.n_samples, dtype=torch.float64, device=hidden.device)
        samples = (torch.exp(u * math.log(v + 1)).long() - 1).clamp_(0, v - 1)
        ids = torch.cat([targets, samples])  # one gather: one gradient scatter per step
        weight, bias = self.weight[ids], self.bias[ids] - self.log_expected_count(ids)
        n = len(targets)
        true_logit = (hidden * weight[:n]).sum(-1) + bias[:n]
        sampled = torch.addmm(bias[n:], hidden, weight[n:].T)
        sampled.masked_fill_(samples.unsqueeze(0) == targets.unsqueeze(1), -math.inf)
        return torch.logaddexp(true_logit, torch.logsumexp(sampled, dim=1)) - true_logit

    def full_nll(self, hidden: Tensor, targets: Tensor) -> Tensor:
        """Exact per-row NLL, in chunks of rows so the logits stay small."""
        rows = max(1, FULL_SOFTMAX_CHUNK // self.weight.shape[0])
        parts = [
            F.cross_entropy(F.linear(h, self.weight, self.bias), t, reduction="none")
            for h, t in zip(hidden.split(rows), targets.split(rows), strict=True)
        ]
        return torch.cat(parts) if parts else hidden.new_zeros(0)


def bilm_tf_init(model: BiLM) -> None:
    """bilm-tf's initial values where they differ from PyTorch's defaults."""
    with torch.no_grad():
        nn.init.uniform_(model.token_encoder.embedding.weight, -1.0, 1.0)
        model.token_encoder.embedding.weight[0] = 0.0
        for highway in model.token_encoder.highways:
            highway.carry.bias.fill_(HIGHWAY_CARRY_BIAS)


class LanguageModel(nn.Module):
    """A BiLM trained as forward and backward LMs with a shared softmax.

    ``forward`` returns the training loss and the final LSTM states (the
    initial states of the next window); the state tensors are shaped like
    :meth:`BiLM.zero_state`, index 0 for the forward stream, 1 for the backward.
    """

    def __init__(self, options: ElmoOptions, vocab: Vocab, dropout: float = 0.1,
                 n_samples: int = 8192) -> None:
        super().__init__()
        self.vocab = vocab
        self.bilm = BiLM(options, dropout)
        bilm_tf_init(self.bilm)
        self.softmax = SampledSoftmax(len(vocab), options.projection_dim, n_samples)

    def top_outputs(self, char_ids: Tensor, inputs: Tensor, mask: Tensor, state_c: Tensor,
                    state_h: Tensor) -> tuple[list[Tensor], Tensor, Tensor]:
        """Top-layer outputs (B, U, P) of each stream (dropout applied) and final states."""
        bilm = self.bilm
        tokens = bilm.token_encoder(char_ids)  # (N, P): once per distinct token of the window
        tops, cs, hs = [], [], []
        for d in range(2):
            outputs, c, h = bilm.run_stack(d, tokens[inputs[d]], mask, state_c[d], state_h[d])
            tops.append(bilm.dropout(outputs[-1]))
            cs.append(c)
            hs.append(h)
        return tops, torch.stack(cs), torch.stack(hs)

    def direction_nll(self, tops: list[Tensor], targets: Tensor) -> list[Tensor]:
        """Per-target NLL of each direction (positions with target -1 left out).

        Both directions go through the softmax together (one set of samples).
        """
        hidden = torch.cat([top.reshape(-1, top.shape[-1]) for top in tops])
        flat = targets.reshape(-1)
        keep = flat >= 0
        nll = self.softmax(hidden[keep], flat[keep])
        n_forward = int(keep[: targets[0].numel()].sum())
        return [nll[:n_forward], nll[n_forward:]]

    def forward(self, char_ids: Tensor, inputs: Tensor, targets: Tensor, mask: Tensor,
                state_c: Tensor, state_h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        tops, c, h = self.top_outputs(char_ids, inputs, mask, state_c, state_h)
        losses = [nll.sum() / max(1, nll.numel()) for nll in self.direction_nll(tops, targets)]
        return 0.5 * (losses[0] + losses[1]), c, h


def batch_tensors(batch: Batch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A Batch as (char_ids, inputs, targets, mask) tensors."""
    return (torch.from_numpy(batch.char_ids), torch.from_numpy(batch.inputs),
            torch.from_numpy(batch.targets), torch.from_numpy(batch.mask))


@torch.no_grad()
def evaluate(model: LanguageModel, path: str | Path, batch_size: int = 32, unroll: int = 20,
             tokenizer: Tokenizer = str.split) -> float:
    """Exact held-out perplexity: ``exp`` of the mean of both directions' mean NLL.

    The file's sentences go, in order, round the ``batch_size`` rows as
    streams whose states carry across windows, as in training. Every word
    and the sentence end are predicted (``</S>`` forward, ``<S>`` backward);
    the full softmax is used and dropout is off.
    """
    corpus = scan_corpus([path], tokenizer, what="evaluation")
    was_training = model.training
    model.eval()
    try:
        rows = min(batch_size, len(corpus))
        options = model.bilm.options
        streams = Streams(corpus, model.vocab, SequentialOrder(len(corpus)), rows, unroll,
                          options.max_characters_per_token)
        state_c, state_h = model.bilm.zero_state(rows)
        sums, counts = [0.0, 0.0], [0, 0]
        while (batch := streams.next_batch()) is not None:
            char_ids, inputs, targets, mask = batch_tensors(batch)
            tops, state_c, state_h = model.top_outputs(char_ids, inputs, mask, state_c, state_h)
            for d, nll in enumerate(model.direction_nll(tops, targets)):
                sums[d] += float(nll.double().sum())
                counts[d] += nll.numel()
    finally:
        corpus.close()
        model.train(was_training)
    return math.exp(0.5 * (sums[0] / counts[0] + sums[1] / counts[1]))


def unigram_perplexity(train: Iterable[str | Path], path: str | Path, vocab: Vocab,
                       tokenizer: Tokenizer = str.split) -> float:
    """The baseline for :func:`evaluate`: an add-one unigram model of the training files.

    It predicts what :func:`evaluate` predicts (every word as its vocabulary
    id, then the sentence end); the sentence end of either direction is one
    event, so both directions have the same perplexity.
    """
    counts: Counter[str] = Counter()
    corpus = scan_corpus(train, tokenizer, counts)
    corpus.close()
    freq = np.ones(len(vocab))
    for word, n in counts.items():
        freq[vocab.id(word)] += n
    freq[vocab.index[EOS]] += len(corpus)
    log_p = np.log(freq / freq.sum())
    held_out = scan_corpus([path], tokenizer, what="evaluation")
    try:
        ids = [i for k in range(len(held_out)) for i in
               [*(vocab.id(w) for w in held_out.sentence(k)), vocab.index[EOS]]]
    finally:
        held_out.close()
    return math.exp(-float(log_p[ids].mean()))
