"""Outputs a hostile or unlucky user points at (breaker findings 2 and 3): a FIFO, a
symlink or a directory is refused before anything is written; a full disk or a
file-size limit under hdf5 output is one line, no partial file left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from elmo_runtime.errors import ElmoError
from elmo_runtime.files import atomic_path, write_text_atomic
from support.cli import run_elmo as run
from support.errors import one_line_error

LINES = "the cat sat on the mat .\nsecond line here\n"


@pytest.fixture()
def text(tmp_path: Path) -> Path:
    path = tmp_path / "in.txt"
    path.write_text(LINES, encoding="utf-8")
    return path


def test_fifo_output_is_refused_and_left_a_fifo(toy_model_path: Path, text: Path,
                                                 tmp_path: Path) -> None:
    fifo = tmp_path / "out.npz"
    os.mkfifo(fifo)
    result = run("embed", text, fifo, "--model", toy_model_path)
    one_line_error(result, f"{fifo}: is a FIFO, not a regular file")
    assert fifo.is_fifo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.npz"]


def test_symlink_output_is_refused_and_its_target_untouched(toy_model_path: Path, text: Path,
                                                            tmp_path: Path) -> None:
    target = tmp_path / "real.npz"
    target.write_bytes(b"keep me")
    link = tmp_path / "out.npz"
    link.symlink_to(target)
    result = run("embed", text, link, "--model", toy_model_path)
    one_line_error(result, f"{link}: is a symbolic link")
    assert link.is_symlink() and target.read_bytes() == b"keep me"


def test_atomic_path_refuses_non_regular_targets(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    for path, kind in ((fifo, "a FIFO"), (link, "a symbolic link"), (tmp_path, "a directory")):
        with pytest.raises(ElmoError, match=f"is {kind}"):
            write_text_atomic(path, "x")
    assert fifo.is_fifo() and link.is_symlink()
    with atomic_path(tmp_path / "plain.txt") as tmp:  # a regular (new) file is fine
        tmp.write_text("ok", encoding="utf-8")
    assert (tmp_path / "plain.txt").read_text(encoding="utf-8") == "ok"


CAPPED = r"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit: EFBIG, not a kill
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
from elmo_runtime.cli import main
sys.argv = ["elmo"] + sys.argv[2:]
main()
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_hdf5_output_over_the_file_size_limit_is_one_line(text: Path, tmp_path: Path) -> None:
    """libhdf5 segfaulted after ~330 traceback lines when a write failed (ENOSPC/EFBIG)."""
    pytest.importorskip("h5py")
    text.write_text("the cat sat on the mat and looked at the dog .\n" * 400, encoding="utf-8")
    out = tmp_path / "o.hdf5"
    proc = subprocess.run(
        [sys.executable, "-c", CAPPED, str(6 << 20), "embed", str(text), str(out), "--top"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"Error: {out}: cannot write the output"), lines
    assert "file-size limit" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_hdf5_output_on_a_full_disk_is_one_line(toy_model_path: Path, text: Path,
                                                tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("h5py")
    import shutil

    from elmo_runtime.output import writers

    real = shutil.disk_usage
    monkeypatch.setattr(writers.shutil, "disk_usage",
                        lambda p: real(p)._replace(free=writers.HDF5_HEADROOM))
    out = tmp_path / "o.hdf5"
    result = run("embed", text, out, "--model", toy_model_path)
    one_line_error(result, f"{out}: cannot write the output (no space left on the device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]
