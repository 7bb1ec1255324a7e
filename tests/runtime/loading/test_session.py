"""The session factory: bad model files, contract checks, providers, threads."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest
from elmo_runtime.cli.info import describe_model
from elmo_runtime.errors import ElmoError, ModelError, ProviderError
from elmo_runtime.format import contract
from elmo_runtime.loading.loaded import open_model
from elmo_runtime.loading.session import CPU, CUDA
from support.errors import one_line_error
from support.models import TOY_OPTIONS, toy_model

HAS_CUDA = CUDA in ort.get_available_providers()


def test_opens_a_contract_model(toy_model_path: Path) -> None:
    loaded = open_model(toy_model_path, "cpu")
    session, info = loaded.session, loaded.info
    assert info.options == TOY_OPTIONS
    assert info.source == {"kind": "toy"}
    assert info.quantization == {"mode": "none"}
    assert session.get_providers() == [CPU]


def test_session_options(toy_model_path: Path) -> None:
    loaded = open_model(toy_model_path, "cpu", threads=3)
    session, _ = loaded.session, loaded.info
    opts = session.get_session_options()
    assert opts.intra_op_num_threads == 3
    assert opts.inter_op_num_threads == 1
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert opts.log_severity_level == 4  # FATAL only: elmo-edge prints its own error line


def test_default_threads_are_the_cpus_the_process_may_use(
    toy_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24 item 7: under taskset or a cgroup quota onnxruntime started a thread per
    core of the machine."""
    from elmo_runtime.loading import session as session_module

    monkeypatch.setattr(session_module, "available_cpus", lambda: 1)
    opts = open_model(toy_model_path, "cpu").session.get_session_options()
    assert opts.intra_op_num_threads == 1


@pytest.mark.parametrize("threads", [0, -2, 1.5, True, "4"])
def test_invalid_threads(toy_model_path: Path, threads: object) -> None:
    with pytest.raises(ElmoError, match="threads must be a positive integer"):
        open_model(toy_model_path, "cpu", threads=threads)  # type: ignore[arg-type]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as e:
        open_model(tmp_path / "nope.onnx")
    assert one_line_error(e) == f"{tmp_path / 'nope.onnx'}: no such model file"


def test_directory_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such model file"):
        open_model(tmp_path)


@pytest.mark.parametrize(
    "content",
    [b"this is not a model\n" * 10, b"", b"\x08\x07\x12\x04junk\xff\xff\xff"],
    ids=["text", "empty", "garbage"],
)
def test_not_onnx(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelError) as e:
        open_model(path, "cpu")
    message = one_line_error(e)
    assert message.startswith(f"{path}: not a readable ONNX model (truncated or not ONNX): ")


def test_truncated_model(tmp_path: Path, toy_model_path: Path) -> None:
    data = toy_model_path.read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError) as e:
        open_model(path, "cpu")
    assert "not a readable ONNX model (truncated or not ONNX)" in one_line_error(e)


def test_onnx_that_is_not_an_elmo_model(not_elmo_model_path: Path) -> None:
    with pytest.raises(ModelError) as e:
        open_model(not_elmo_model_path, "cpu")
    assert "not an elmo-edge model" in one_line_error(e)
    assert str(not_elmo_model_path) in str(e.value)


def test_wrong_input_names(tmp_path: Path) -> None:
    path = tmp_path / "renamed.onnx"
    onnx.save(toy_model(
        input_names=("chars", "cached_vectors", "token_index", "state_c", "state_h")
    ), str(path))
    with pytest.raises(ModelError) as e:
        open_model(path, "cpu")
    assert "do not match the elmo-edge contract" in one_line_error(e)


@pytest.mark.parametrize(
    ("version", "advice"),
    [("99", "upgrade elmo-edge"), ("1", "re-export it")],  # 1 fed char_ids [B, T, C]
)
def test_unsupported_format_version(tmp_path: Path, version: str, advice: str) -> None:
    meta = contract.make_metadata(TOY_OPTIONS, {"kind": "toy"})
    meta[contract.KEY_VERSION] = version
    path = tmp_path / "other.onnx"
    onnx.save(toy_model(metadata=meta), str(path))
    with pytest.raises(ModelError, match=f"format version '{version}' is not supported") as e:
        open_model(path, "cpu")
    assert advice in str(e.value)


def test_unknown_provider(toy_model_path: Path) -> None:
    with pytest.raises(ProviderError, match="unknown provider 'tpu'"):
        open_model(toy_model_path, "tpu")


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime build has CUDA")
def test_cuda_on_a_cpu_only_build(toy_model_path: Path) -> None:
    with pytest.raises(ProviderError) as e:
        open_model(toy_model_path, "cuda")
    message = one_line_error(e)
    assert "provider 'cuda' is not available" in message
    assert CPU in message  # names what is available
    assert "pip uninstall -y onnxruntime && pip install onnxruntime-gpu" in message


@pytest.mark.skipif(HAS_CUDA, reason="this onnxruntime build has CUDA")
def test_auto_without_cuda_is_silently_cpu(toy_model_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = open_model(toy_model_path, "auto")
        session, _ = loaded.session, loaded.info
    assert session.get_providers() == [CPU]


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the build claim CUDA; the session then fails to attach it."""
    if HAS_CUDA:
        pytest.skip("this onnxruntime build really has CUDA")
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])


@pytest.mark.usefixtures("fake_cuda")
def test_auto_falls_back_to_cpu_with_one_warning(toy_model_path: Path) -> None:
    with pytest.warns(UserWarning) as record:
        loaded = open_model(toy_model_path, "auto")
        session, info = loaded.session, loaded.info
    assert len(record) == 1
    message = str(record[0].message)
    assert "\n" not in message
    assert "CUDA is offered but unusable" in message
    assert message.endswith("running on the CPU")
    assert session.get_providers() == [CPU]
    assert info.options == TOY_OPTIONS


@pytest.mark.usefixtures("fake_cuda")
def test_cuda_that_does_not_attach_is_an_error(toy_model_path: Path) -> None:
    with pytest.raises(ProviderError) as e:
        open_model(toy_model_path, "cuda")
    assert "CUDA is offered but unusable (the CUDA provider did not attach)" in one_line_error(e)


@pytest.mark.usefixtures("fake_cuda")
def test_bad_file_with_cuda_offered_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.onnx"
    path.write_text("not a model")
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        open_model(path, "cuda")


def test_describe_model(toy_model_path: Path) -> None:
    d = describe_model(toy_model_path)
    assert d["format"] == contract.FORMAT_NAME
    assert d["format_version"] == contract.FORMAT_VERSION
    assert d["opset"] == 17
    assert d["file_size"] == toy_model_path.stat().st_size
    assert d["options"] == TOY_OPTIONS.to_dict()
    assert d["n_parameters"] == TOY_OPTIONS.n_parameters()
    assert [a["name"] for a in d["inputs"]] == list(contract.INPUTS)
    assert [a["name"] for a in d["outputs"]] == list(contract.OUTPUTS)
    assert d["inputs"][0]["shape"] == ["distinct_tokens", 50]  # the contract's axis name


def test_describe_marks_default_states_optional(tiny_model_path: Path) -> None:
    d = describe_model(tiny_model_path)
    optional = {a["name"]: a["optional"] for a in d["inputs"]}
    assert optional == {"token_chars": False, "cached_vectors": True, "token_index": False,
                        "state_c": True, "state_h": True}


def test_char_scheme_is_named_and_older_files_read_as_bilm_tf() -> None:
    from elmo_runtime.format import chars

    meta = contract.make_metadata(TOY_OPTIONS, {"kind": "test"})
    assert json.loads(meta[contract.KEY_CHARS])["scheme"] == chars.SCHEME_NAME == "bilm-tf-bytes"
    older = json.loads(meta[contract.KEY_CHARS])
    del older["scheme"]  # files written before the scheme had a name
    contract.parse_metadata({**meta, contract.KEY_CHARS: json.dumps(older)}, "old.onnx")
    other = {**older, "scheme": "something-else"}
    with pytest.raises(ModelError, match=r"x\.onnx: model uses char ids .*something-else"):
        contract.parse_metadata({**meta, contract.KEY_CHARS: json.dumps(other)}, "x.onnx")


def test_create_session_from_bytes_with_config_entries(toy_model_path: Path) -> None:
    """The one factory: bytes or a path, extra config entries applied, no contract check."""
    from elmo_runtime.loading.session import create_session

    data = toy_model_path.read_bytes()
    session = create_session(data, "cpu", threads=1,
                             config={"session.intra_op.allow_spinning": "0"})
    assert session.get_providers() == [CPU]
    assert session.get_session_options().get_session_config_entry(
        "session.intra_op.allow_spinning") == "0"
    with pytest.raises(ModelError, match="<in-memory model>: not a readable ONNX model"):
        create_session(data[: len(data) // 2], "cpu")
