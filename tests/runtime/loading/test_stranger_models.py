"""Issue 24 item 11: models from strangers end in one line and exit status 1, never an
internal error: declared sizes are checked against the bytes before anything is read."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from elmo_runtime.errors import ElmoError, ModelError
from elmo_runtime.quantize import quantize_model
from support.cli import run_elmo as run
from support.errors import one_line_error


def _with_declared_rows(src: Path, dst: Path, rows: int) -> str:
    """``src`` with its first 2-d initializer declaring ``rows`` rows (data unchanged)."""
    proto = onnx.load(str(src))
    tensor = next(t for t in proto.graph.initializer if len(t.dims) == 2)
    tensor.dims[0] = rows
    onnx.save(proto, str(dst))
    return tensor.name


def test_quantize_refuses_an_initializer_declaring_2_to_the_40_rows(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    src = tmp_path / "huge.onnx"
    name = _with_declared_rows(tiny_model_path, src, 2**40)
    with pytest.raises(ModelError, match=f"initializer '{name}' declares shape \\[1099511627776"):
        quantize_model(src, tmp_path / "q.onnx", check=False)
    result = run("quantize", src, "-o", tmp_path / "q.onnx", "--no-check")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"Error: {src}: initializer")
    assert "more than the whole file" in result.stderr
    assert not (tmp_path / "q.onnx").exists()


def test_quantize_refuses_a_shape_that_disagrees_with_its_bytes(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    src = tmp_path / "short.onnx"
    _with_declared_rows(tiny_model_path, src, 3)
    with pytest.raises(ModelError, match=r"declares shape \[3, \d+\] \(\d+ bytes\) but holds"):
        quantize_model(src, tmp_path / "q.onnx", check=False)


def test_quantize_replaces_an_existing_output_only_with_overwrite(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    dst = tmp_path / "q.onnx"
    dst.write_bytes(b"mine")
    with pytest.raises(ElmoError, match="exists; pass --overwrite"):
        quantize_model(tiny_model_path, dst, check=False)
    one_line_error(run("quantize", tiny_model_path, "-o", dst, "--no-check"),
                   f"{dst}: exists; pass --overwrite to replace it")
    assert dst.read_bytes() == b"mine"
    assert run("quantize", tiny_model_path, "-o", dst, "--no-check", "--overwrite").exit_code == 0
    assert onnx.load(str(dst)).graph.node


def test_a_graph_asking_for_terabytes_at_run_time_is_one_line(tmp_path: Path) -> None:
    """A graph whose ConstantOfShape asks for 20 TB once it runs: `elmo embed` printed
    onnxruntime's coloured multi-line log before its own line. Now: one line, exit 1."""
    import subprocess
    import sys

    import numpy as np
    from onnx import helper
    from support.models import toy_model

    model = toy_model()
    graph = model.graph
    graph.node[-1].output[0] = "layers_pre"
    make = helper.make_node
    graph.node.extend([
        make("Shape", ["token_index"], ["ti_shape"]),
        make("ReduceSum", ["ti_shape"], ["ti_sum"], keepdims=1),
        make("Mul", ["ti_sum", "huge_k"], ["huge_shape"]),  # (B + T) * 2**40 floats
        make("ConstantOfShape", ["huge_shape"], ["huge"]),
        make("ReduceSum", ["huge"], ["huge_sum"], keepdims=0),
        make("Add", ["layers_pre", "huge_sum"], ["layers"]),
    ])
    graph.initializer.append(onnx.numpy_helper.from_array(np.array([1 << 40], np.int64),
                                                          "huge_k"))
    path = tmp_path / "greedy.onnx"
    onnx.save(model, str(path))
    src = tmp_path / "in.txt"
    src.write_text("a b\n")
    done = subprocess.run([sys.executable, "-m", "elmo_runtime", "embed", str(src),
                           str(tmp_path / "out.npz"), "-m", str(path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"Error: {path}: onnxruntime failed on a batch of 1 sentences")
    # onnxruntime's arena said "Failed to allocate memory"; malloc (sessions have no arena) fails
    # as std::bad_alloc
    assert "Failed to allocate memory" in line or "bad_alloc" in line
    assert "\x1b[" not in done.stderr
