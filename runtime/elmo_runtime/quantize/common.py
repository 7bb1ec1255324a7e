"""What every quantization room shares: its errors, quiet quantizers, a walk over subgraphs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import onnx

from ..errors import ElmoError


class QuantizeError(ElmoError):
    """A model that cannot be quantized, or whose quantized outputs drift too far."""


class QuantizeWarning(UserWarning):
    """A quantized model written although it failed the check (``force``)."""


@contextmanager
def quiet_quantizers() -> Iterator[None]:
    """Silence onnxruntime's quantizers' logging (they warn about shape inference on bools)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def all_graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``graph`` and every subgraph below it (Scan bodies, If branches, …), depth first."""
    stack = [graph]
    while stack:
        g = stack.pop()
        yield g
        for node in g.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    stack.append(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    stack.extend(attr.graphs)
