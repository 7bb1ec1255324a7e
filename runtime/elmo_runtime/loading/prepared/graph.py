"""Graph rewrites for prepared models, and the child process that prepares one.

Both rewrites leave the results equal up to float rounding and are
idempotent; :mod:`.cache` applies them before onnxruntime writes the
optimized, pre-packed copy (``python -m elmo_runtime.loading.prepared.graph
SRC OUT_DIR DATA GRAPH``, run as a child so its memory peak is not the caller's).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ModelError, first_line
from ...format import contract
from ..model_file import load_proto
from ..session import create_session

MIN_EXTERNAL_BYTES = 1024  # initializers at least this big go to the memory-mapped file
NOT_A_MODEL = 3  # the child's exit status for a file that is no elmo-edge model
# operator domains onnxruntime ships kernels for; anything else needs a custom-op library
BUILTIN_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})


def check_model(proto: Any, where: str) -> None:
    """Refuse a stranger's file before anything is optimized or cached.

    Raises ModelError when the metadata is not an elmo-edge model's
    (:func:`elmo_runtime.format.contract.parse_metadata`) or the graph uses an
    operator domain that needs a custom-op library (never loaded).
    """
    contract.parse_metadata({p.key: p.value for p in proto.metadata_props}, where)
    foreign = sorted({o.domain for o in proto.opset_import} - BUILTIN_DOMAINS)
    if foreign:
        raise ModelError(f"{where}: uses operators of {', '.join(map(repr, foreign))}, which need "
                         "a custom-op library; elmo-edge never loads one")


def hoist_scan_initializers(proto: Any, min_bytes: int = MIN_EXTERNAL_BYTES) -> int:
    """Move big initializers of ``Scan``/``Loop`` bodies into the main graph, in place.

    The body then names them from the outer scope, which ONNX allows; results
    do not change. onnxruntime pre-packs outer-scope weights for the body's
    kernels and releases the originals, which it does not for a body's own
    initializers. Returns how many were moved (0 when already hoisted).
    """
    import onnx

    moved = 0
    for node in proto.graph.node:
        for attr in node.attribute:
            if attr.type != onnx.AttributeProto.GRAPH:
                continue
            body, keep = attr.g, []
            for tensor in body.initializer:
                if _nbytes(tensor) < min_bytes:
                    keep.append(tensor)
                    continue
                new = f"{node.name}__{tensor.name}"
                for inner in body.node:
                    for i, name in enumerate(inner.input):
                        if name == tensor.name:
                            inner.input[i] = new
                tensor.name = new
                proto.graph.initializer.append(tensor)
                moved += 1
            del body.initializer[:]
            body.initializer.extend(keep)
    return moved


def fold_matmul_bias(proto: Any) -> int:
    """Rewrite ``Add(MatMul(x, W), b)`` of the main graph as one ``Gemm``, in place.

    ``W`` a 2-D and ``b`` a 1-D initializer; ``x`` of any rank >= 2 is viewed
    as 2-D (``Reshape`` aliases, it copies nothing). onnxruntime does not fuse
    a 3-D MatMul with its bias, and its Add is not in place: the LSTM input
    projection of a batch (steps x 4 x lstm_dim floats) was held twice.
    Results change by float rounding only. Returns how many were rewritten.
    """
    from onnx import helper, numpy_helper

    graph = proto.graph
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 15:  # Shape's start/end attributes
        return 0
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    uses: dict[str, int] = {}
    for n in graph.node:
        for name in n.input:
            uses[name] = uses.get(name, 0) + 1
    outputs = {o.name for o in graph.output}
    nodes, folded = [], 0
    for node in graph.node:
        mm = producer.get(node.input[0]) if node.op_type == "Add" and len(node.input) == 2 else None
        mm = mm if mm is not None and mm.op_type == "MatMul" and len(mm.input) == 2 else None
        w = inits.get(mm.input[1]) if mm is not None else None
        b = inits.get(node.input[1]) if mm is not None else None
        if (mm is None or w is None or b is None or len(w.dims) != 2
                or list(b.dims) != [w.dims[1]] or uses.get(mm.output[0]) != 1
                or mm.output[0] in outputs):
            nodes.append(node)
            continue
        x, y, tag = mm.input[0], node.output[0], f"{mm.name or mm.output[0]}__fold"
        flat = numpy_helper.from_array(np.array([-1, w.dims[0]], np.int64), f"{tag}_flat")
        last = numpy_helper.from_array(np.array([w.dims[1]], np.int64), f"{tag}_n")
        graph.initializer.extend([flat, last])
        if mm in nodes:
            nodes.remove(mm)
        nodes += [
            helper.make_node("Shape", [x], [f"{tag}_lead"], name=f"{tag}_shape", end=-1),
            helper.make_node("Concat", [f"{tag}_lead", last.name], [f"{tag}_shape_out"],
                             name=f"{tag}_concat", axis=0),
            helper.make_node("Reshape", [x, flat.name], [f"{tag}_x2"], name=f"{tag}_flatten"),
            helper.make_node("Gemm", [f"{tag}_x2", mm.input[1], node.input[1]], [f"{tag}_y2"],
                             name=f"{tag}_gemm"),
            helper.make_node("Reshape", [f"{tag}_y2", f"{tag}_shape_out"], [y],
                             name=f"{tag}_unflatten"),
        ]
        folded += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return folded


def _nbytes(tensor: Any) -> int:
    if tensor.external_data:
        return int(next((e.value for e in tensor.external_data if e.key == "length"), 0))
    return len(tensor.raw_data) or tensor.ByteSize()


def make(model: Path, out_dir: Path, data: str, graph: str) -> None:
    """Child process: hoist, then let onnxruntime write the optimized, pre-packed model."""
    import onnx

    proto = load_proto(model)
    check_model(proto, str(model))
    hoist_scan_initializers(proto)
    fold_matmul_bias(proto)
    staged = out_dir / "staged.onnx"
    onnx.save(proto, str(staged), save_as_external_data=True, location="staged.data",
              size_threshold=MIN_EXTERNAL_BYTES)
    del proto
    config = {
        "session.optimized_model_external_initializers_file_name": data,
        "session.optimized_model_external_initializers_min_size_in_bytes": str(MIN_EXTERNAL_BYTES),
        "session.save_external_prepacked_constant_initializers": "1",
    }
    create_session(staged, "cpu", threads=1, config=config,
                   optimized_model_path=out_dir / graph)
    staged.unlink()
    (out_dir / "staged.data").unlink(missing_ok=True)
    for name in (graph, data):
        with open(out_dir / name, "rb") as f:
            os.fsync(f.fileno())


if __name__ == "__main__":
    try:
        make(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4])
    except ModelError as e:  # the plain load reports it to the user
        print(first_line(e), file=sys.stderr)
        sys.exit(NOT_A_MODEL)
