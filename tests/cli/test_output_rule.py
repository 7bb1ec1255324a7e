"""Issue 24 items 2-3, 12: one output rule for every command that writes a file.

An existing file that is not an output this run wrote is never replaced without
--overwrite; an input named again as the output (stdin's file included) is refused
even with it; OUTPUT "-" is npz on stdout; an unknown extension is refused; temp
files that killed runs left beside the output are removed at the next run.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from elmo_runtime.errors import ElmoError
from elmo_runtime.files import check_output, stale_partials
from support.cli import run_elmo as run
from support.cli import write_input
from support.errors import one_line_error


def elmo(*args: object, stdin: Path | None = None, cwd: Path | None = None,
         stdout: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m elmo_runtime ARGS`` in a subprocess: real file descriptors 0 and 1."""
    with open(stdin or os.devnull, "rb") as fin, \
            open(stdout, "wb") if stdout else open(os.devnull, "wb") as fout:
        return subprocess.run([sys.executable, "-m", "elmo_runtime", *map(str, args)],
                              stdin=fin, stdout=fout, stderr=subprocess.PIPE, cwd=cwd,
                              text=True, timeout=300, check=False)


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stdin_named_again_as_the_output_is_refused(toy_model_path: Path,
                                                    tmp_path: Path) -> None:
    """`elmo embed - corpus.txt < corpus.txt` replaced the corpus with hdf5 and exited 0."""
    corpus = write_input(tmp_path, b"a b\nc\n", "corpus.txt")
    for args in ((corpus,), (corpus, "--format", "hdf5", "--overwrite")):
        done = elmo("embed", "-", *args, "-m", toy_model_path, stdin=corpus)
        assert done.returncode == 1, done.stderr
        assert done.stderr.strip() == (f"Error: {corpus}: is the file on stdin (the same file); "
                                       "choose another output, nothing was written")
        assert corpus.read_bytes() == b"a b\nc\n"


def test_an_existing_output_needs_overwrite(toy_model_path: Path, tmp_path: Path) -> None:
    src = write_input(tmp_path, b"a b\nc\n")
    out = tmp_path / "out.hdf5"
    out.write_bytes(b"someone's file")
    one_line_error(run("embed", src, out, "-m", toy_model_path),
                   f"{out}: exists; pass --overwrite to replace it (nothing was written)")
    assert out.read_bytes() == b"someone's file"
    assert run("embed", src, out, "-m", toy_model_path, "--overwrite").exit_code == 0
    import h5py

    assert h5py.is_hdf5(out)


def test_output_dash_is_npz_on_stdout(toy_model_path: Path, tmp_path: Path) -> None:
    src = write_input(tmp_path, b"a b\nc\n")
    sink = tmp_path / "stdout.bin"
    done = elmo("embed", src, "-", "-m", toy_model_path, "--top", stdout=sink)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "-").exists()
    with np.load(io.BytesIO(sink.read_bytes()), allow_pickle=False) as z:
        assert z["0"].shape == (2, 4) and z["1"].shape == (1, 4)
        assert json.loads(z["sentence_to_index"].item()) == {"a b": "0", "c": "1"}
    refused = run("embed", src, "-", "-m", toy_model_path, "--format", "hdf5")
    assert refused.exit_code == 2
    assert "OUTPUT - (stdout) is written as npz only" in refused.stderr


def test_a_failed_run_leaves_no_complete_zip_on_stdout(toy_model_path: Path,
                                                      tmp_path: Path) -> None:
    src = write_input(tmp_path, b"a b\n\xff\n")  # line 2 is not UTF-8: the run fails
    sink = tmp_path / "stdout.bin"
    done = elmo("embed", src, "-", "-m", toy_model_path, stdout=sink)
    assert done.returncode == 1 and "invalid UTF-8" in done.stderr
    import zipfile

    assert not zipfile.is_zipfile(sink)  # no central directory: no reader takes it as whole


def test_stale_partials_of_dead_processes_are_removed(toy_model_path: Path,
                                                      tmp_path: Path) -> None:
    src = write_input(tmp_path, b"a\n")
    out = tmp_path / "out.npz"
    dead = tmp_path / f".out.npz.partial-{dead_pid()}"
    dead.write_bytes(b"x" * 3000)
    mine = tmp_path / f".out.npz.partial-{os.getppid()}"  # a live process: kept
    mine.write_bytes(b"y")
    other = tmp_path / f".other.npz.partial-{dead_pid()}"  # another output's: not this run's
    other.write_bytes(b"z")
    assert stale_partials(out) == [dead]
    result = run("embed", src, out, "-m", toy_model_path)
    assert result.exit_code == 0, result.output
    assert f"Warning: removed 1 temp file(s) of killed runs beside {out} (0.0 MiB: {dead.name})" \
        in result.stderr
    assert not dead.exists() and mine.exists() and other.exists()


def test_check_output_is_the_one_rule(tmp_path: Path) -> None:
    src = write_input(tmp_path, b"a\n")
    new = tmp_path / "new.onnx"
    check_output(new, [src])  # absent: fine
    new.write_bytes(b"")
    with pytest.raises(ElmoError, match="exists; pass --overwrite"):
        check_output(new, [src])
    check_output(new, [src], overwrite=True)
    with pytest.raises(ElmoError, match="is the input"):
        check_output(src, [src], overwrite=True)


@pytest.mark.parametrize("out", ["shards/", "out.hdf5"])
def test_a_missing_hdf5_extra_is_said_before_anything_is_made(
    toy_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, out: str
) -> None:
    """Issue 24: a shard-directory run without the hdf5 extra failed and left a manifest."""
    monkeypatch.setitem(sys.modules, "h5py", None)  # `import h5py` raises ImportError
    src = write_input(tmp_path, b"a b\n")
    one_line_error(run("embed", src, f"{tmp_path}/{out}", "-m", toy_model_path),
                   "hdf5 output needs h5py: pip install 'elmo-edge[hdf5]' (or use --format npz)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_tokenize_with_a_converted_bilm_tf_model_warns_once(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    """Issue 24: --tokenize with a converted bilm-tf model was accepted silently."""
    import onnx
    from elmo_runtime.format import contract

    proto = onnx.load(str(tiny_model_path))
    for prop in proto.metadata_props:
        if prop.key == contract.KEY_SOURCE:
            prop.value = json.dumps({"kind": "elmo-hdf5", "weights_sha256": "0" * 64})
    converted = tmp_path / "converted.onnx"
    onnx.save(proto, str(converted))
    src = write_input(tmp_path, b"Mr. Smith didn't go .\nIt's fine .\n")
    said = run("embed", src, tmp_path / "a.npz", "-m", converted, "--tokenize")
    assert said.exit_code == 0, said.output
    warnings = [line for line in said.stderr.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1 and "a converted bilm-tf model was trained on text tokenized "\
        "another way" in warnings[0]
    for model, flags in ((converted, ()), (tiny_model_path, ("--tokenize",))):
        quiet = run("embed", src, tmp_path / f"b{len(flags)}.npz", "-m", model, *flags)
        assert quiet.exit_code == 0 and "Warning" not in quiet.stderr, quiet.stderr
