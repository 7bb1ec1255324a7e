"""Training checkpoints from strangers and export outputs over their own input (breaker
findings 8 and 11): pickled code is refused in one line that never advises
weights_only=False, and `elmo export` refuses to write over the checkpoint it reads."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="elmo export reads torch checkpoints")
from click.testing import CliRunner  # noqa: E402
from elmo_export.train.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint  # noqa: E402
from elmo_runtime.cli import main  # noqa: E402


class _Payload:
    """Unpickling this would create a file: a test that the loader never runs it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _one_line(args: list[str]) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_pickled_code_is_refused_in_one_line_without_torch_advice(tmp_path: Path,
                                                                  how: str) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    if how == "torch.save":
        torch.save({"format": "x", "model": _Payload(str(marker))}, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(_Payload(str(marker)), f, protocol=4)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert "refused it (Unsupported" in message and "nothing in it was run" in message
    assert "\n" not in message
    assert "weights_only" not in message and "False" not in message
    line = _one_line(["export", str(path), "-o", str(tmp_path / "m.onnx")])
    assert "nothing in it was run" in line and "weights_only" not in line
    assert not marker.exists()


@pytest.mark.parametrize("fmt", ["onnx", "hdf5"])
def test_export_refuses_to_write_over_its_checkpoint(tmp_path: Path, fmt: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    checkpoint = run / CHECKPOINT_NAME
    checkpoint.write_bytes(b"the training run's only copy")
    if fmt == "onnx":
        cases = [(str(run), str(checkpoint)), (str(checkpoint), str(checkpoint))]
        link = tmp_path / "link.pt"
        link.symlink_to(checkpoint)
        cases.append((str(checkpoint), str(link)))
    else:  # the directory's weights.hdf5 is a hard link to the checkpoint
        out = tmp_path / "out"
        out.mkdir()
        (out / "weights.hdf5").hardlink_to(checkpoint)
        cases = [(str(run), str(out))]
    for source, output in cases:
        line = _one_line(["export", source, "--format", fmt, "-o", output])
        assert "(the same file)" in line and "nothing was written" in line
    assert checkpoint.read_bytes() == b"the training run's only copy"
