"""The drop-ins without their oracles: API details, errors, the conversion cache.

Numbers against AllenNLP 0.9 and simple_elmo themselves: test_oracles.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from elmo_runtime.compat import converted
from elmo_runtime.compat.allennlp import ConfigurationError, ElmoEmbedder
from elmo_runtime.compat.simple_elmo import ElmoModel
from elmo_runtime.compat.sources import locate
from elmo_runtime.errors import GPU_HINT, ElmoError, ProviderError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pair(bilm_fixtures: Path) -> tuple[Path, Path]:
    return bilm_fixtures / "options.json", bilm_fixtures / "lm_weights.hdf5"


@pytest.fixture(scope="module")
def elmo(pair: tuple[Path, Path]) -> ElmoEmbedder:
    return ElmoEmbedder(*pair)


def test_allennlp_shapes_dtypes_and_empty_sentences(elmo: ElmoEmbedder) -> None:
    v = elmo.embed_sentence(["The", "cat", "sat"])
    assert v.shape == (3, 3, 32) and v.dtype == np.float32
    alone = elmo.embed_batch([[]])[0]
    assert alone.shape == (3, 0, 1024) and alone.dtype == np.float64  # AllenNLP's own value
    batch = elmo.embed_batch([["a"], [], ["b", "c"]])
    assert [b.shape for b in batch] == [(3, 1, 32), (3, 0, 1024), (3, 2, 32)]
    activations, mask = elmo.batch_to_embeddings([["a"], ["b", "c"]])
    assert activations.shape == (2, 3, 2, 32) and activations.dtype == np.float32
    assert mask.dtype == np.int64 and mask.tolist() == [[1, 0], [1, 1]]
    assert not activations[0, :, 1].any()
    assert [x.shape for x in elmo.embed_sentences([["a"]] * 5, batch_size=2)] == [(3, 1, 32)] * 5


def test_allennlp_stateful_by_default_stateless_one_keyword_away(
        pair: tuple[Path, Path]) -> None:
    sentence = ["A", "sentence", "twice"]
    stateful = ElmoEmbedder(*pair)
    first, second = stateful.embed_sentence(sentence), stateful.embed_sentence(sentence)
    assert np.abs(first - second).max() > 1e-4  # AllenNLP's state carried over
    stateless = ElmoEmbedder(*pair, stateful=False)
    np.testing.assert_array_equal(stateless.embed_sentence(sentence),
                                  stateless.embed_sentence(sentence))
    np.testing.assert_allclose(stateless.embed_sentence(sentence), first, atol=1e-6)


def test_embed_file_refusals(elmo: ElmoEmbedder, tmp_path: Path) -> None:
    (tmp_path / "blank.txt").write_text("a b\n\nc\n")
    with pytest.raises(ConfigurationError, match=r"empty lines at indexes \[1\]"):
        elmo.embed_file(str(tmp_path / "blank.txt"), str(tmp_path / "o.hdf5"))
    (tmp_path / "dup.txt").write_text("a b\nc\na b\n")
    with pytest.raises(ConfigurationError, match="Key already exists"):
        elmo.embed_file(open(tmp_path / "dup.txt"), str(tmp_path / "o.hdf5"),  # noqa: SIM115
                        use_sentence_keys=True)
    assert not (tmp_path / "o.hdf5").exists()  # nothing half-written under the final name
    with pytest.raises(ValueError, match="output_format"):
        elmo.embed_file(str(tmp_path / "dup.txt"), str(tmp_path / "o.hdf5"), "mean")


def test_embed_file_layout(elmo: ElmoEmbedder, tmp_path: Path) -> None:
    import h5py

    (tmp_path / "in.txt").write_text("a b\nc\n")
    elmo.embed_file(open(tmp_path / "in.txt"), str(tmp_path / "o.hdf5"), "top")  # noqa: SIM115
    with h5py.File(tmp_path / "o.hdf5") as f:
        assert sorted(f) == ["0", "1", "sentence_to_index"]
        assert f["0"].shape == (2, 32) and f["0"].dtype == np.float32
        assert json.loads(f["sentence_to_index"][0]) == {"a b": "0", "c": "1"}


def test_embed_file_replaces_an_existing_output_only_with_overwrite(
        elmo: ElmoEmbedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import h5py

    (tmp_path / "in.txt").write_text("a b\nc\n")
    out = tmp_path / "o.hdf5"
    out.write_bytes(b"the user's own file")

    def no_embedding(*args: object, **kwargs: object) -> None:
        raise AssertionError("embedded before the existing output was refused")

    with monkeypatch.context() as m:
        m.setattr(elmo, "embed_sentences", no_embedding)
        lines = open(tmp_path / "in.txt")  # noqa: SIM115
        with pytest.raises(FileExistsError) as refused:
            elmo.embed_file(lines, str(out))
        assert not lines.closed and lines.read() == "a b\nc\n"  # not read either
        lines.close()
    message = str(refused.value)
    assert message == (f"{out}: exists; pass overwrite=True to replace it (AllenNLP "
                       "replaced it silently; nothing was written)"), message
    assert out.read_bytes() == b"the user's own file"
    elmo.embed_file(str(tmp_path / "in.txt"), str(out), "top", overwrite=True)
    with h5py.File(out) as f:
        assert sorted(f) == ["0", "1", "sentence_to_index"]


def test_cuda_device(pair: tuple[Path, Path]) -> None:
    with pytest.raises(ProviderError, match="CUDA_VISIBLE_DEVICES=1"):
        ElmoEmbedder(*pair, cuda_device=1)
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here: cuda_device=0 runs (a gpu test)")
    with pytest.raises(ProviderError, match="onnxruntime-gpu") as refused:
        ElmoEmbedder(*pair, cuda_device=0)
    assert str(refused.value).count(GPU_HINT) == 1, refused.value  # the fix, said once


def test_simple_elmo_refusals_and_load(bilm_fixtures: Path, tmp_path: Path) -> None:
    model = ElmoModel()
    with pytest.raises(ElmoError, match="load"):
        model.get_elmo_vectors([["a"]])
    with pytest.raises(ElmoError, match="full=True"):
        model.load(str(bilm_fixtures), full=True)
    archive = tmp_path / "nlpl.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(bilm_fixtures / "options.json", "options.json")
        zf.write(bilm_fixtures / "lm_weights.hdf5", "model.hdf5")
    assert model.load(str(archive), max_batch_size=2) == "The model is now loaded."
    assert (model.vector_size, model.n_layers, model.batch_size) == (32, 3, 2)
    with pytest.raises(ElmoError, match="layers"):
        model.get_elmo_vectors([["a"]], layers="mean")
    with pytest.raises(ElmoError, match="session"):
        model.get_elmo_vectors([["a"]], session=object())
    vectors = model.get_elmo_vectors([["a", "b", "c"], ["d"], ["e", "f"]], layers="top")
    assert vectors.shape == (3, 3, 32) and vectors.dtype == np.float64
    assert not vectors[1, 1:].any() and not vectors[2, 2:].any()  # "top": padding rows 0
    average = model.get_elmo_vectors([["a", "b", "c"], ["d"], ["e", "f"]])
    assert average[1, 1:].any() and not average[2, 2:].any()  # padding inside a batch, not past
    unit = model.get_elmo_vector_average([["a", "b"], ["c"]], layers="all")
    assert unit.shape == (2, 3, 32)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=-1), 1.0, atol=1e-6)


def test_cache_reused_without_converting(pair: tuple[Path, Path], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    source = locate(*pair)
    dead = tmp_path / "converted" / f".{converted.cache_key(source, tmp_path)[:16]}.killed"
    dead.mkdir(parents=True)  # what a converter killed mid-way leaves
    first = converted.converted_model(source, tmp_path)
    assert not dead.exists()
    monkeypatch.setattr(converted, "_convert", lambda *a: pytest.fail("converted again"))
    assert converted.converted_model(locate(*pair), tmp_path) == first
    assert json.loads((first.parent / "source.json").read_text())["weights"] == str(pair[1])
    assert sorted(os.listdir(first.parent)) == ["model.onnx", "source.json"]


def test_cache_folder_must_be_private(pair: tuple[Path, Path], tmp_path: Path) -> None:
    root = tmp_path / "cache"
    (root / "converted").mkdir(parents=True)
    os.chmod(root / "converted", 0o777)
    with pytest.raises(ElmoError, match="writable by others"):
        converted.converted_model(locate(*pair), root)


def test_processes_share_one_conversion(bilm_fixtures: Path, tmp_path: Path) -> None:
    """Three processes start at once on a cold cache: one converts, all get the model."""
    model = tmp_path / "m"
    model.mkdir()
    (model / "options.json").write_bytes((bilm_fixtures / "options.json").read_bytes())
    (model / "weights.hdf5").write_bytes((bilm_fixtures / "lm_weights.hdf5").read_bytes())
    code = ("from elmo_runtime.compat.allennlp import ElmoEmbedder; import sys; "
            "print(ElmoEmbedder(sys.argv[1]).embed_sentence(['x']).sum())")
    env = {**os.environ, "ELMO_EDGE_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(REPO / "runtime"), str(REPO / "export")])}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(model)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(3)]
    results = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    assert sum("converting" in err for _, err in results) == 1
    assert len({out for out, _ in results}) == 1
    assert len(list((tmp_path / "cache" / "converted").glob("*/model.onnx"))) == 1


BLOCK = """
import sys
class _Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "tensorflow"):
            raise ImportError(name + " is blocked in this test")
sys.meta_path.insert(0, _Blocked())
from elmo_runtime.compat.allennlp import ElmoEmbedder
from elmo_runtime.compat.simple_elmo import ElmoModel
print(ElmoEmbedder(sys.argv[1], sys.argv[2]).embed_sentence(["a", "b"]).shape)
m = ElmoModel(); m.load(sys.argv[3])
print(m.get_elmo_vectors([["a", "b"], ["c"]]).shape)
"""


def test_dropins_need_neither_torch_nor_tensorflow(pair: tuple[Path, Path]) -> None:
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(REPO / "runtime"), str(REPO / "export")])}
    result = subprocess.run([sys.executable, "-c", BLOCK, str(pair[0]), str(pair[1]),
                             str(pair[0].parent)], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["(3, 2, 32)", "(2, 2, 32)"]


@pytest.mark.parametrize(("change", "words"), [
    ({"bidirectional": False}, "bidirectional is not true"),
    ({"char_cnn": None}, "word-input bilm-tf model"),
])
def test_options_published_models_use_refused_by_name(bilm_fixtures: Path, change: dict,
                                                      words: str) -> None:
    from elmo_runtime.errors import OptionsError
    from elmo_runtime.format.options import parse_options

    options = json.loads((bilm_fixtures / "options.json").read_text())
    options.update(change)
    options = {k: v for k, v in options.items() if v is not None}
    with pytest.raises(OptionsError, match=words):
        parse_options(options)


@pytest.mark.gpu
def test_cuda_device_0_runs_on_cuda(pair: tuple[Path, Path]) -> None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime offers no CUDA execution provider here (install onnxruntime-gpu)")
    gpu = ElmoEmbedder(*pair, cuda_device=0)
    assert gpu._embedder.providers[0] == "CUDAExecutionProvider"
    cpu = ElmoEmbedder(*pair)
    batch = [["The", "cat", "sat"], ["A", "dog"]]
    for a, b in zip(gpu.embed_batch(batch), cpu.embed_batch(batch), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_a_zip_whose_options_are_refused_names_its_member(bilm_fixtures: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setenv("ELMO_EDGE_CACHE", str(tmp_path / "cache"))
    options = json.loads((bilm_fixtures / "options.json").read_text())
    del options["char_cnn"]
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("nlpl/options.json", json.dumps(options))
        zf.write(bilm_fixtures / "lm_weights.hdf5", "nlpl/model.hdf5")
    with pytest.raises(ElmoError) as refused:
        ElmoEmbedder(archive)
    message = str(refused.value)
    assert "conversion failed: nlpl/options.json: options: no char_cnn" in message, message
    assert str(tmp_path / "cache") not in message  # not the deleted temporary copy


def test_embed_file_into_a_missing_folder_is_one_line(elmo: ElmoEmbedder,
                                                      tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("a b\n")
    with pytest.raises(ElmoError, match=r"o.hdf5: directory .*missing does not exist$"):
        elmo.embed_file(str(tmp_path / "in.txt"), str(tmp_path / "missing" / "o.hdf5"))


def test_a_folder_with_weights_but_no_options_is_named_itself(bilm_fixtures: Path,
                                                              tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "lm_weights.hdf5").write_bytes(b"")
    (tmp_path / "model" / "logs").mkdir()  # one folder beside: not where the model is
    with pytest.raises(ElmoError, match=r"model: no options.json"):
        locate(tmp_path / "model")
    (tmp_path / "one" / "inner").mkdir(parents=True)  # a lone folder is still looked into
    for name in ("options.json", "lm_weights.hdf5"):
        (tmp_path / "one" / "inner" / name).write_bytes((bilm_fixtures / name).read_bytes())
    assert Path(locate(tmp_path / "one").options).parent.name == "inner"


def test_bundled_names_and_no_model_at_all() -> None:
    """A bundled name works as it does for Embedder and --model; no model at all (AllenNLP
    downloaded the original ELMo) is one line saying what to pass, not a TypeError."""
    from elmo_runtime import Embedder
    from elmo_runtime.compat.sources import SourceError

    sentence = ["The", "cat", "sat"]
    expected = Embedder("default", stateful=True).embed_sentence(sentence)
    np.testing.assert_array_equal(ElmoEmbedder("default").embed_sentence(sentence), expected)
    model = ElmoModel()
    model.load("default-int8")
    assert model.get_elmo_vectors([sentence]).shape == (1, 3, expected.shape[-1])
    with pytest.raises(SourceError, match="elmo pull allennlp-original") as refused:
        ElmoEmbedder()
    assert "\n" not in str(refused.value)
