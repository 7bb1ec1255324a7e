"""The runtime runs where PyTorch is not installed, from Python and from the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import venv

import numpy as np
import pytest
from support import REPO
from support.notorch import BLOCK_TORCH


def _run(code: str, *args: str, python: str = sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, "-c", code, *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_runtime_api_and_cli_without_torch(tiny_model_path, tmp_path):
    """With `import torch` blocked: the Python API and `elmo embed` both work."""
    text = tmp_path / "in.txt"
    text.write_text("The cat sat .\n\nA bank of the river .\n", encoding="utf-8")
    out = tmp_path / "out.npz"
    code = BLOCK_TORCH + textwrap.dedent(
        """
        import sys
        import numpy as np
        from elmo_runtime import Embedder
        from elmo_runtime.cli import main
        vec = Embedder(sys.argv[1], provider="cpu").embed_sentence(["The", "cat", "sat", "."])
        np.save(sys.argv[4], vec)
        try:
            main(["embed", sys.argv[2], sys.argv[3], "--model", sys.argv[1], "--top"])
        except SystemExit as e:
            assert e.code in (0, None), e.code
        assert "torch" not in sys.modules
        print("ok")
        """
    )
    api_out = tmp_path / "api.npy"
    proc = _run(code, str(tiny_model_path), str(text), str(out), str(api_out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok")
    assert np.load(api_out).shape[:2] == (3, 4)
    with np.load(out, allow_pickle=False) as z:
        assert z["0"].shape == (4, 32) and z["1"].shape == (0, 32) and z["2"].shape == (6, 32)


def test_blocker_really_blocks():
    """Guard for the test above: the blocker makes importing torch fail."""
    proc = _run(BLOCK_TORCH + "import torch")
    assert proc.returncode != 0 and "torch is blocked" in proc.stderr


@pytest.mark.slow
def test_fresh_virtualenv_without_torch(tiny_model_path, tmp_path):
    """A real venv holding only the runtime's four dependencies and elmo-edge (not editable)."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = str(env_dir / "bin" / "python")
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    env = {**os.environ, "PIP_NO_INPUT": "1"}
    for cmd in (pip + ["numpy", "onnxruntime", "onnx", "click"], pip + ["--no-deps", str(REPO)]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env,
                              check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert _run("import torch", python=py).returncode != 0  # torch really is absent
    text = tmp_path / "in.txt"
    text.write_text("The cat sat .\n", encoding="utf-8")
    out = tmp_path / "out.npz"
    elmo = str(env_dir / "bin" / "elmo")
    proc = subprocess.run([elmo, "embed", str(text), str(out), "--model", str(tiny_model_path)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    with np.load(out, allow_pickle=False) as z:
        assert z["0"].shape == (3, 4, 32)
    # the bundled default model ships with a plain (not editable) install
    default_out = tmp_path / "default.npz"
    proc = subprocess.run([elmo, "embed", str(text), str(default_out), "--top"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    with np.load(default_out, allow_pickle=False) as z:
        assert z["0"].shape == (4, 256)  # "The cat sat ." with --top
    proc = subprocess.run([elmo, "info", str(tiny_model_path)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0 and "elmo-edge" in proc.stdout, proc.stderr


def test_convert_side_imports_without_torch():
    """The graph builder, weight layout, NumPy reference, parity check and `elmo convert`
    are torch-free (issue 11): importing them with torch blocked works."""
    code = BLOCK_TORCH + textwrap.dedent(
        """
        import sys
        import elmo_export.cli, elmo_export.graph.convert, elmo_export.graph.builder
        import elmo_export.graph.parity, elmo_export.graph.reference, elmo_export.bilm_tf.weights
        assert "torch" not in sys.modules
        print("ok")
        """
    )
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
