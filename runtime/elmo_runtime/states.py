"""LSTM state carried across batches by row position (bilm-tf's stateful mode).

State is indexed by the row a sentence occupies in its batch, not by the
sentence: after a batch of ``B`` rows, rows ``< B`` take the batch's final
states, rows ``>= B`` keep theirs, and rows never seen start at zero
(docs/elmo-spec.md, "State across batches"). Both the PyTorch model and the
runtime use this class, so the rule lives in one place.
"""

from __future__ import annotations

import numpy as np


class RowStates:
    """Per-row (c, h) for both directions and every layer.

    ``c`` has shape (2, n_layers, rows, cell_dim) and ``h`` (2, n_layers, rows,
    proj_dim); ``rows`` grows to the largest batch seen.
    """

    def __init__(self, n_layers: int, cell_dim: int, proj_dim: int) -> None:
        self.n_layers = n_layers
        self.cell_dim = cell_dim
        self.proj_dim = proj_dim
        self.reset()

    def reset(self) -> None:
        """Forget every row: the next batch starts from zeros."""
        self.c = np.zeros((2, self.n_layers, 0, self.cell_dim), dtype=np.float32)
        self.h = np.zeros((2, self.n_layers, 0, self.proj_dim), dtype=np.float32)

    @property
    def rows(self) -> int:
        return self.c.shape[2]

    def initial(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """Initial (c, h) for a batch of ``batch`` rows (zeros for unseen rows)."""
        if batch > self.rows:
            grow = batch - self.rows
            self.c = np.concatenate(
                [self.c, np.zeros((2, self.n_layers, grow, self.cell_dim), np.float32)], axis=2
            )
            self.h = np.concatenate(
                [self.h, np.zeros((2, self.n_layers, grow, self.proj_dim), np.float32)], axis=2
            )
        return self.c[:, :, :batch].copy(), self.h[:, :, :batch].copy()

    def update(self, c: np.ndarray, h: np.ndarray) -> None:
        """Store a batch's final states in its rows; other rows keep theirs."""
        batch = c.shape[2]
        if batch > self.rows:
            self.initial(batch)
        self.c[:, :, :batch] = c
        self.h[:, :, :batch] = h
