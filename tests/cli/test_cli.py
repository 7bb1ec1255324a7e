"""The `elmo` command: embed, info, errors as one line, interrupts, real subprocesses."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from elmo_runtime import __version__
from elmo_runtime.cli import INTERRUPTS, count_lines, read_sentences
from elmo_runtime.embedder import Embedder
from elmo_runtime.format import contract
from elmo_runtime.mix import ScalarMix, save_mix
from support.cli import elmo_command, interrupt_after
from support.cli import run_elmo as run
from support.errors import one_line_error as assert_error
from support.processes import default_signals

h5py = pytest.importorskip("h5py")


def load_npz(path: Path) -> tuple[list[np.ndarray], dict[str, str]]:
    with np.load(path, allow_pickle=False) as z:
        n = len(z.files) - 1
        assert sorted(z.files) == sorted([*map(str, range(n)), "sentence_to_index"])
        return [z[str(i)] for i in range(n)], json.loads(z["sentence_to_index"].item())


@pytest.fixture
def text_file(tmp_path: Path) -> Callable[[bytes], Path]:
    def make(content: bytes, name: str = "in.txt") -> Path:
        path = tmp_path / name
        path.write_bytes(content)
        return path

    return make


# ---------------------------------------------------------------- embed


def test_embed_hdf5_layout(toy_model_path: Path, text_file: Callable, toy: Callable) -> None:
    src = text_file(b"The cat sat\n\nhello  world \n")
    out = src.parent / "out.hdf5"
    result = run("embed", src, out, "--model", toy_model_path)
    assert result.exit_code == 0, result.output
    assert "wrote 3 sentences" in result.stderr
    with h5py.File(out, "r") as f:
        assert sorted(f.keys()) == ["0", "1", "2", "sentence_to_index"]
        np.testing.assert_array_equal(f["0"][...], toy(["The", "cat", "sat"]))
        assert f["1"].shape == (3, 0, 4)  # a blank line keeps its index
        np.testing.assert_array_equal(f["2"][...], toy(["hello", "world"]))
        index = json.loads(f["sentence_to_index"][0])
    assert index == {"The cat sat": "0", "": "1", "hello  world": "2"}  # the stripped line
    assert sorted(p.name for p in src.parent.iterdir()) == ["in.txt", "out.hdf5"]


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ([], lambda layers: layers),
        (["--all"], lambda layers: layers),
        (["--top"], lambda layers: layers[-1]),
        (["--average"], lambda layers: layers.mean(axis=0)),
    ],
)
def test_embed_mix_modes(
    toy_model_path: Path, text_file: Callable, toy: Callable, flag: list, expected: Callable
) -> None:
    src = text_file(b"a b c\n")
    out = src.parent / "out.npz"
    assert run("embed", src, out, "-m", toy_model_path, *flag).exit_code == 0
    (arr,), _ = load_npz(out)
    np.testing.assert_allclose(arr, expected(toy(["a", "b", "c"])), rtol=1e-6)


def test_embed_mix_file(toy_model_path: Path, text_file: Callable, toy: Callable) -> None:
    src = text_file(b"a b\n")
    save_mix(src.parent / "mix.json", ScalarMix([0.0, 0.0, np.log(2.0)], gamma=4.0))
    out = src.parent / "out.npz"
    result = run("embed", src, out, "-m", toy_model_path, "--mix", src.parent / "mix.json")
    assert result.exit_code == 0, result.output
    (arr,), _ = load_npz(out)
    layers = toy(["a", "b"]).astype(np.float64)
    np.testing.assert_allclose(arr, (layers[0] + layers[1] + 2 * layers[2]), rtol=1e-6)


def test_mix_file_errors(toy_model_path: Path, text_file: Callable) -> None:
    src = text_file(b"a b\n")
    (src.parent / "mix.json").write_text('{"weights": [1, 2], "gamma": 1}')
    result = run(
        "embed", src, src.parent / "o.npz", "-m", toy_model_path, "--mix", src.parent / "mix.json"
    )
    assert_error(result, "mix.json: expected 3 weights (the model has 3 layers), found 2")
    assert result.stderr.startswith("Error: ")
    result = run(
        "embed",
        src,
        src.parent / "o.npz",
        "-m",
        toy_model_path,
        "--top",
        "--mix",
        src.parent / "mix.json",
    )
    assert result.exit_code == 2
    assert "--mix cannot be combined with --all, --top or --average" in result.stderr
    assert not (src.parent / "o.npz").exists()


def test_format_option_and_inference(toy_model_path: Path, text_file: Callable) -> None:
    src = text_file(b"a\n")
    assert run("embed", src, src.parent / "x.out", "-m", toy_model_path, "--format", "npz")
    load_npz(src.parent / "x.out")
    assert run("embed", src, src.parent / "y.npz", "-m", toy_model_path).exit_code == 0
    load_npz(src.parent / "y.npz")
    assert run("embed", src, src.parent / "z.data", "-m", toy_model_path).exit_code == 2
    assert not (src.parent / "z.data").exists()  # an unknown extension is refused (issue 24)
    assert run("embed", src, src.parent / "z.data", "-m", toy_model_path, "--format", "hdf5")
    assert h5py.is_hdf5(src.parent / "z.data")


def test_stdin_crlf_bom_and_control_characters(
    toy_model_path: Path, tmp_path: Path, toy: Callable
) -> None:
    out = tmp_path / "out.npz"
    data = "\ufeffα b\r\nx\x01y \x00\r\n\tz\n".encode()
    result = run("embed", "-", out, "-m", toy_model_path, input=data)
    assert result.exit_code == 0, result.output
    arrays, index = load_npz(out)
    assert index == {"α b": "0", "x\x01y \x00": "1", "z": "2"}
    np.testing.assert_array_equal(arrays[0], toy(["α", "b"]))  # no BOM, no "\r"
    np.testing.assert_array_equal(arrays[1], toy(["x\x01y", "\x00"]))


def test_last_line_without_newline(toy_model_path: Path, text_file: Callable) -> None:
    src = text_file(b"a\nb c")
    assert run("embed", src, src.parent / "o.npz", "-m", toy_model_path).exit_code == 0
    arrays, _ = load_npz(src.parent / "o.npz")
    assert [a.shape[1] for a in arrays] == [1, 2]


@pytest.mark.parametrize("name", ["empty.hdf5", "empty.npz"])
def test_empty_input(toy_model_path: Path, text_file: Callable, name: str) -> None:
    src = text_file(b"")
    out = src.parent / name
    result = run("embed", src, out, "-m", toy_model_path)
    assert result.exit_code == 0, result.output
    if name.endswith("npz"):
        assert load_npz(out) == ([], {})
    else:
        with h5py.File(out, "r") as f:
            assert list(f.keys()) == ["sentence_to_index"]
            assert json.loads(f["sentence_to_index"][0]) == {}


def test_long_line_and_long_tokens(
    toy_model_path: Path, text_file: Callable, toy: Callable
) -> None:
    long_line = " ".join(f"w{i}" for i in range(5000))
    src = text_file(f"short\n{long_line}\n{'é' * 40} {'x' * 100}\n".encode())
    out = src.parent / "o.npz"
    assert run("embed", src, out, "-m", toy_model_path, "--batch-size", "2").exit_code == 0
    arrays, _ = load_npz(out)
    assert [a.shape for a in arrays] == [(3, 1, 4), (3, 5000, 4), (3, 2, 4)]
    np.testing.assert_array_equal(arrays[2], toy(["é" * 40, "x" * 100]))


def test_invalid_utf8_names_line_and_column(toy_model_path: Path, text_file: Callable) -> None:
    src = text_file(b"fine\nstill fine\nbad \xff byte\n")
    out = src.parent / "o.hdf5"
    result = run("embed", src, out, "-m", toy_model_path)
    assert_error(
        result,
        f"Error: {src}:3: invalid UTF-8 (byte 0xff at column 5); fix the "
        "file or pass --errors replace",
    )
    assert sorted(p.name for p in src.parent.iterdir()) == ["in.txt"]


def test_errors_replace(toy_model_path: Path, text_file: Callable) -> None:
    src = text_file(b"bad \xff\xfe byte\n")
    out = src.parent / "o.npz"
    result = run("embed", src, out, "-m", toy_model_path, "--errors", "replace")
    assert result.exit_code == 0, result.output
    _, index = load_npz(out)
    assert index == {"bad \ufffd\ufffd byte": "0"}


def test_stateful_cli(toy_model_path: Path, text_file: Callable, toy: Callable) -> None:
    src = text_file(b"a a a\nb\nc\nd\n")
    out = src.parent / "o.npz"
    result = run("embed", src, out, "-m", toy_model_path, "--stateful", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    arrays, _ = load_npz(out)
    np.testing.assert_array_equal(arrays[2], toy(["c"], 5))  # row 0 after "a a a"
    np.testing.assert_array_equal(arrays[3], toy(["d"], 3))  # row 1 after "b"


@pytest.mark.parametrize("cache", ["0", "0.00001", "32"])  # off, one toy vector, default
def test_token_cache_option_changes_nothing_in_the_output(
    toy_model_path: Path, text_file: Callable, toy: Callable, cache: str
) -> None:
    """0 = off, a cache too small for the text (it evicts), the default: same vectors."""
    lines = [["a", "bb", "a"], ["bb", "c"], ["a"], ["ddd", "c", "a"]]
    src = text_file("".join(" ".join(t) + "\n" for t in lines).encode())
    out = src.parent / f"o{cache}.npz"
    result = run("embed", src, out, "-m", toy_model_path, "--token-cache", cache,
                 "--batch-size", "1")
    assert result.exit_code == 0, result.output
    arrays, _ = load_npz(out)
    for tokens, got in zip(lines, arrays, strict=True):
        np.testing.assert_array_equal(got, toy(tokens))


def test_token_cache_option_rejects_a_negative_size(toy_model_path: Path,
                                                    text_file: Callable) -> None:
    result = run("embed", text_file(b"a\n"), "o.npz", "-m", toy_model_path, "--token-cache", "-1")
    assert result.exit_code == 2 and "--token-cache" in result.output


@pytest.mark.parametrize(
    ("make_model", "message"),
    [
        (lambda tmp, toy, ne: tmp / "missing.onnx", "missing.onnx: no such model file"),
        (lambda tmp, toy, ne: _write(tmp / "m.onnx", b"hello\n"), "not a readable ONNX model"),
        (
            lambda tmp, toy, ne: _write(tmp / "m.onnx", toy.read_bytes()[:300]),
            "not a readable ONNX model (truncated or not ONNX)",
        ),
        (lambda tmp, toy, ne: ne, "not an elmo-edge model"),
    ],
    ids=["missing", "not-onnx", "truncated", "not-elmo"],
)
def test_bad_models(
    tmp_path: Path,
    toy_model_path: Path,
    not_elmo_model_path: Path,
    make_model: Callable,
    message: str,
) -> None:
    src = _write(tmp_path / "in.txt", b"a\n")
    model = make_model(tmp_path, toy_model_path, not_elmo_model_path)
    result = run("embed", src, tmp_path / "o.hdf5", "--model", model)
    assert_error(result, message)
    assert not (tmp_path / "o.hdf5").exists()
    assert partials(tmp_path) == []
    assert_error(run("info", model), message)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_missing_input_and_output_directory(toy_model_path: Path, tmp_path: Path) -> None:
    assert_error(
        run("embed", tmp_path / "nope.txt", tmp_path / "o.hdf5", "-m", toy_model_path),
        "nope.txt: no such input file",
    )
    src = _write(tmp_path / "in.txt", b"a\n")
    out = tmp_path / "missing" / "o.hdf5"
    assert_error(
        run("embed", src, out, "-m", toy_model_path),
        f"{out}: directory {out.parent} does not exist",
    )


def test_no_bundled_model(text_file: Callable, no_bundled_models: Path) -> None:
    """`elmo embed` without --model in an installation without the model files: one line,
    nothing written."""
    src = text_file(b"a\n")
    result = run("embed", src, src.parent / "o.hdf5")
    assert_error(result, "no bundled default model in this installation; pass --model PATH")
    assert sorted(p.name for p in src.parent.iterdir()) == ["in.txt"]


def test_the_bundled_model_without_model(text_file: Callable) -> None:
    src = text_file(b"a\n")
    result = run("embed", src, src.parent / "o.hdf5")
    assert result.exit_code == 0, result.output


@pytest.mark.skipif(
    "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers(),
    reason="this onnxruntime build has CUDA",
)
def test_provider_cuda_on_cpu_only_build(toy_model_path: Path, text_file: Callable) -> None:
    src = text_file(b"a\n")
    result = run("embed", src, src.parent / "o.hdf5", "-m", toy_model_path, "--provider", "cuda")
    assert_error(result, "provider 'cuda' is not available")
    assert "pip uninstall -y onnxruntime && pip install onnxruntime-gpu" in result.stderr


def test_cuda_fallback_warning_is_one_line(
    toy_model_path: Path, text_file: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime build has CUDA")
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    src = text_file(b"a\n")
    result = run("embed", src, src.parent / "o.npz", "-m", toy_model_path)
    assert result.exit_code == 0, result.output
    warning = [line for line in result.stderr.splitlines() if line.startswith("Warning: ")]
    assert len(warning) == 1
    assert "CUDA is offered but unusable" in warning[0]
    assert "running on the CPU" in warning[0]


def test_internal_error_is_one_line(
    toy_model_path: Path, text_file: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self, sentences, batch_size=64):
        raise RuntimeError("something odd\nsecond line")
        yield

    monkeypatch.setattr(Embedder, "embed_sentences", broken)
    src = text_file(b"a\n")
    result = run("embed", src, src.parent / "o.npz", "-m", toy_model_path)
    assert_error(
        result,
        "internal error: RuntimeError: something odd (set ELMO_DEBUG=1 for the traceback)",
        code=2,
    )
    assert not (src.parent / "o.npz").exists()
    debug = run("embed", src, src.parent / "o.npz", "-m", toy_model_path, env={"ELMO_DEBUG": "1"})
    assert isinstance(debug.exception, RuntimeError)


def test_interrupt_leaves_no_output(
    toy_model_path: Path, text_file: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    interrupt_after(monkeypatch, 2)
    src = text_file(b"a\nb\nc\nd\n")
    result = run("embed", src, src.parent / "o.hdf5", "-m", toy_model_path)
    assert_error(result, "interrupted", code=130)
    assert sorted(p.name for p in src.parent.iterdir()) == ["in.txt"]


def test_read_sentences_streams() -> None:
    class OneShot(io.BytesIO):
        reads = 0

        def readline(self, *args):
            self.reads += 1
            return super().readline(*args)

        def __iter__(self):
            return iter(self.readline, b"")

    stream = OneShot(b"a b\nc\n\xff\n")
    sentences = read_sentences(stream, "x")
    assert next(sentences) == ["a", "b"]
    assert stream.reads == 1
    assert next(sentences) == ["c"]
    with pytest.raises(Exception, match="x:3: invalid UTF-8"):
        next(sentences)


def test_count_lines(tmp_path: Path) -> None:
    assert count_lines(str(_write(tmp_path / "a", b"x\ny\n"))) == 2
    assert count_lines(str(_write(tmp_path / "b", b"x\ny"))) == 2
    assert count_lines(str(_write(tmp_path / "c", b""))) == 0
    assert count_lines(str(tmp_path)) is None
    assert count_lines(str(tmp_path / "missing")) is None


# ---------------------------------------------------------------- info, help, version


def test_info_text(toy_model_path: Path) -> None:
    result = run("info", toy_model_path)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"{contract.FORMAT_NAME} v{contract.FORMAT_VERSION}, ONNX opset 17" in out
    assert "LSTM          2 layers, dim 3, projection 2" in out
    assert f"token_chars tensor(int32) [{contract.DISTINCT.name}, 50]" in out
    assert "token_index tensor(int32) [batch, tokens]" in out
    assert "quantization  mode=none" in out
    assert "source        kind=toy" in out


def test_info_json(toy_model_path: Path) -> None:
    result = run("info", toy_model_path, "--json")
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert d["options"]["lstm"]["dim"] == 3
    assert d["opset"] == 17
    assert [o["name"] for o in d["outputs"]] == list(contract.OUTPUTS)


def test_help_and_version() -> None:
    for args in ([], ["embed"], ["info"]):
        result = run(*args, "--help")
        assert result.exit_code == 0
        assert "Usage: elmo" in result.stdout
    assert run("--version").stdout.strip() == f"elmo, version {__version__}"


# ---------------------------------------------------------------- real subprocesses


def elmo(*args: object, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*elmo_command(), *map(str, args)], capture_output=True, **kwargs)


@pytest.mark.slow  # `elmo` starts in seconds while it imports torch
def test_subprocess_embed_matches_the_library(tiny_model_path: Path, tmp_path: Path) -> None:
    src = _write(tmp_path / "in.txt", b"The cat sat on the mat .\n\nA dog !\n")
    out = tmp_path / "out.hdf5"
    proc = elmo("embed", src, out, "--model", tiny_model_path, "--provider", "cpu", timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    emb = Embedder(tiny_model_path, provider="cpu")
    expected = emb.embed_batch(
        [["The", "cat", "sat", "on", "the", "mat", "."], [], ["A", "dog", "!"]]
    )
    with h5py.File(out, "r") as f:
        for i, e in enumerate(expected):
            np.testing.assert_allclose(f[str(i)][...], e, atol=1e-6)
        assert json.loads(f["sentence_to_index"][0])["A dog !"] == "2"


@pytest.mark.slow  # `elmo` starts in seconds while it imports torch
def test_subprocess_error_exit_code(tmp_path: Path, not_elmo_model_path: Path) -> None:
    src = _write(tmp_path / "in.txt", b"a\n")
    proc = elmo("embed", src, tmp_path / "o.hdf5", "--model", not_elmo_model_path, timeout=120)
    assert proc.returncode == 1
    stderr = proc.stderr.decode()
    assert stderr.startswith("Error: ") and "not an elmo-edge model" in stderr
    assert len(stderr.strip().splitlines()) == 1


BLOCK_TORCH = (
    "import sys; sys.modules['torch'] = None; sys.modules['h5py'] = None\n"
    "from elmo_runtime.cli import main\n"
    "try:\n    main()\n"
    "finally:\n    assert 'torch' not in [m for m, v in sys.modules.items() if v]\n"
)


def test_runtime_without_torch_or_h5py(toy_model_path: Path, tmp_path: Path) -> None:
    src = _write(tmp_path / "in.txt", b"a b\n")

    def cli(*args: object) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", BLOCK_TORCH, *map(str, args)], capture_output=True, timeout=120
        )

    ok = cli("embed", src, tmp_path / "o.npz", "--model", toy_model_path)
    assert ok.returncode == 0, ok.stderr.decode()
    assert load_npz(tmp_path / "o.npz")[0][0].shape == (3, 2, 4)
    no_h5 = cli("embed", src, tmp_path / "o.hdf5", "--model", toy_model_path)
    assert no_h5.returncode == 1
    assert no_h5.stderr.decode().strip() == (
        "Error: hdf5 output needs h5py: pip install 'elmo-edge[hdf5]' (or use --format npz)"
    )
    convert = cli("convert", "options.json", "weights.hdf5", "-o", "x.onnx")
    assert convert.returncode == 1
    # convert needs no torch (issue 11): only h5py, from the convert extra
    assert "needs the convert extra (h5py is not installed): pip install 'elmo-edge[convert]'" in (
        convert.stderr.decode()
    )
    for command in ("train", "export"):  # found through the elmo_edge.commands entry points
        proc = cli(command, src, "-o", tmp_path / "run")
        assert proc.returncode == 1, proc.stderr.decode()
        assert proc.stderr.decode().strip() == (
            f"Error: `elmo {command}` needs the export extra (torch is not installed): "
            "pip install 'elmo-edge[export]'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "o.npz"]


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def partials(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if ".partial-" in p.name]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_subprocess_interrupt_mid_run(tiny_model_path: Path, tmp_path: Path, sig: int) -> None:
    line = b"the quick brown fox jumps over the lazy dog " * 3 + b"\n"
    src = _write(tmp_path / "big.txt", line * 200_000)
    out = tmp_path / "out.hdf5"
    proc = subprocess.Popen(
        [
            *elmo_command(),
            "embed",
            str(src),
            str(out),
            "--model",
            str(tiny_model_path),
            "--provider",
            "cpu",
        ],
        stderr=subprocess.PIPE,
        preexec_fn=default_signals,
    )
    try:
        wait_for(lambda: any(p.stat().st_size > 0 for p in partials(tmp_path)), proc)
        time.sleep(0.5)  # well into the embedding
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 130
    finally:
        proc.kill()
    stderr = proc.stderr.read().decode()
    assert stderr.strip().splitlines() == ["interrupted; nothing was written"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.txt"]


@pytest.mark.slow  # `elmo` starts in seconds while it imports torch
def test_subprocess_sigterm_while_reading_stdin(toy_model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.npz"
    proc = subprocess.Popen(
        [*elmo_command(), "embed", "-", str(out), "--model", str(toy_model_path)],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        proc.stdin.write(b"a b c\n" * 10)
        proc.stdin.flush()
        wait_for(lambda: bool(partials(tmp_path)), proc)
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 130
    finally:
        proc.kill()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_signal_handlers_are_restored(toy_model_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    assert run("info", toy_model_path).exit_code == 0
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_an_interrupt_swallowed_by_a_callback_still_stops_the_run(
    toy_model_path: Path, text_file: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python drops exceptions raised in weakref callbacks; the remembered signal is not lost."""
    real = Embedder.embed_sentences

    def signal_lost_in_a_callback(self, sentences, batch_size=64):
        for i, out in enumerate(real(self, sentences, batch_size)):
            if i == 1:
                with pytest.raises(KeyboardInterrupt):
                    INTERRUPTS(signal.SIGINT, None)
                # … as Python does when the handler ran inside a weakref callback:
                sys.unraisablehook(
                    Unraisable(KeyboardInterrupt, KeyboardInterrupt(), None, "cb", None)
                )
            yield out

    monkeypatch.setattr(Embedder, "embed_sentences", signal_lost_in_a_callback)
    printed: list[Unraisable] = []
    monkeypatch.setattr(sys, "unraisablehook", printed.append)
    src = text_file(b"a\nb\nc\n")
    result = run("embed", src, src.parent / "o.npz", "-m", toy_model_path)
    assert_error(result, "interrupted", code=130)
    assert printed == []  # the swallowed copy was not printed
    assert sys.unraisablehook == printed.append  # and the hook is restored
    assert sorted(p.name for p in src.parent.iterdir()) == ["in.txt"]


class Unraisable(NamedTuple):
    """What sys.unraisablehook receives."""

    exc_type: type | None
    exc_value: BaseException
    exc_traceback: object
    err_msg: str
    object: object


def test_closed_stdout_is_quiet(tmp_path: Path) -> None:
    """`elmo pull --list | head -1`: a reader that leaves is not the user's error: nothing
    on stderr (no traceback, no message from the interpreter's last flush), exit 141."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to stdout now fails with EPIPE
    try:
        done = subprocess.run([*elmo_command(), "pull", "--list"], stdout=write_end,
                              stderr=subprocess.PIPE, timeout=120, check=False)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, b""), done.stderr.decode()


def test_embed_to_stdout_read_by_head_ends_quietly(toy_model_path: Path,
                                                   text_file: Callable) -> None:
    """`elmo embed in.txt - | head -c 4`: the reader takes 4 bytes of a 1.4 MB npz (more
    than a pipe holds, so the writer is still writing) and closes the pipe."""
    src = text_file(b"a b c d e f g h i j\n" * 2000)
    proc = subprocess.Popen([*elmo_command(), "embed", str(src), "-", "-m",
                             str(toy_model_path), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.read(4) == b"PK\x03\x04"  # a zip's first bytes
        proc.stdout.close()
        stderr = proc.stderr.read()
        assert (proc.wait(timeout=120), stderr) == (141, b""), stderr.decode()
    finally:
        proc.kill()
        proc.stderr.close()
