"""Prepared copies (elmo_runtime.loading.prepared): same vectors, safe cache, refused if corrupt."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from elmo_runtime import Embedder
from elmo_runtime.embedder import default_model_path
from elmo_runtime.loading import hashes
from elmo_runtime.loading.prepared import cache as prepared
from elmo_runtime.loading.prepared import graph as prepare_graph

SENTENCES = [["The", "cat", "sat", "on", "the", "mat", "."],
             ["Prepared", "copies", "map", "their", "packed", "weights"], ["Short"]]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(cache root, prepared .onnx) for the bundled model, prepared once for the module."""
    root = tmp_path_factory.mktemp("cache")
    return root, prepared.prepare(default_model_path(), root)


@pytest.fixture()
def cache(built: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the module's cache, used through ELMO_EDGE_CACHE."""
    root = tmp_path / "cache"
    shutil.copytree(built[0], root)
    monkeypatch.setenv(hashes.ENV_CACHE, str(root))
    return root


def _copy_dir(root: Path) -> Path:
    return prepared.copy_dir(default_model_path(), root)


def _vectors(model: Path) -> list[np.ndarray]:
    return Embedder(model, provider="cpu", threads=1, token_cache_mb=0).embed_batch(SENTENCES)


def _flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_prepared_copy_gives_the_plain_vectors(built: tuple[Path, Path]) -> None:
    plain, copy = _vectors(default_model_path()), _vectors(built[1])
    assert [v.shape for v in copy] == [v.shape for v in plain]
    for a, b in zip(plain, copy, strict=True):
        assert np.abs(a - b).max() <= 1e-6


def test_prepared_int8_copy_gives_the_plain_vectors(tmp_path: Path) -> None:
    int8 = default_model_path().with_name("default.int8.onnx")
    copy = prepared.prepare(int8, tmp_path / "cache")
    for a, b in zip(_vectors(int8), _vectors(copy), strict=True):
        assert np.abs(a - b).max() <= 1e-6


def test_prepared_copy_memory_maps_packed_weights(built: tuple[Path, Path]) -> None:
    """The data file holds the weights and their pre-packed forms; Scan bodies hold none."""
    graph = onnx.load(str(built[1]), load_external_data=False)
    packed = [t.name for t in graph.graph.initializer
              if any(e.key.startswith("prepacked") for e in t.external_data)]
    assert len(packed) >= 8  # 4 LSTM input projections + 8 hoisted recurrent weights, at least
    for node in graph.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                small = prepare_graph.MIN_EXTERNAL_BYTES
                assert all(len(t.raw_data) < small and not t.external_data
                           for t in attr.g.initializer)
    data = built[1].with_name(prepared.DATA)
    assert data.stat().st_size > default_model_path().stat().st_size  # weights + packed copies


def test_hoisting_is_idempotent() -> None:
    proto = onnx.load(str(default_model_path()))
    bodies = sum(len(a.g.initializer) for n in proto.graph.node for a in n.attribute
                 if a.type == onnx.AttributeProto.GRAPH)
    moved = prepare_graph.hoist_scan_initializers(proto)
    assert 0 < moved <= bodies
    assert prepare_graph.hoist_scan_initializers(proto) == 0
    onnx.checker.check_model(proto)


def test_bias_folding_keeps_one_projection_buffer() -> None:
    """Add(MatMul(x, W), b) becomes one Gemm over a flattened view; the graph stays valid."""
    proto = onnx.load(str(default_model_path()))
    adds = sum(n.op_type == "Add" for n in proto.graph.node)
    folded = prepare_graph.fold_matmul_bias(proto)
    assert folded >= 4  # the LSTM input projections at least
    assert sum(n.op_type == "Add" for n in proto.graph.node) == adds - folded
    assert sum(n.op_type == "Gemm" for n in proto.graph.node) == folded
    onnx.checker.check_model(proto)
    assert prepare_graph.fold_matmul_bias(proto) == 0


def test_open_model_loads_the_prepared_copy(cache: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    monkeypatch.setattr(prepared, "MIN_MODEL_BYTES", 0)
    copy = _copy_dir(cache) / prepared.GRAPH
    assert prepared.load_path(default_model_path(), "cpu") == copy
    assert prepared.load_path(default_model_path(), "cuda") == default_model_path()
    monkeypatch.setenv(prepared.ENV_SWITCH, "0")
    assert prepared.load_path(default_model_path(), "cpu") == default_model_path()


def test_small_models_load_as_they_are(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_model_path().stat().st_size < prepared.MIN_MODEL_BYTES
    assert prepared.load_path(default_model_path(), "cpu") == default_model_path()
    monkeypatch.setenv(prepared.ENV_SWITCH, "always")
    assert prepared.load_path(default_model_path(), "cpu") == _copy_dir(cache) / prepared.GRAPH


def test_an_intact_copy_is_reused_not_rebuilt(cache: Path) -> None:
    directory = _copy_dir(cache)
    before = (directory / prepared.MANIFEST).read_text()
    os.utime(directory / prepared.DATA)  # touched: the full hash runs and accepts it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert prepared.prepare(default_model_path(), cache) == directory / prepared.GRAPH
    after = json.loads((directory / prepared.MANIFEST).read_text())
    assert after["files"][prepared.DATA]["sha256"] == json.loads(before)["files"][
        prepared.DATA]["sha256"]
    st = (directory / prepared.DATA).stat()
    assert after["files"][prepared.DATA]["mtime_ns"] == st.st_mtime_ns
    assert after["files"][prepared.DATA]["ctime_ns"] == st.st_ctime_ns


def test_a_load_hashes_only_the_small_graph_file(cache: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The index spares the model's hash, the manifest's stats the data file's: O(1 MiB) a load."""
    prepared.prepare(default_model_path(), cache)  # copytree changed the stats: settle them
    hashed: list[str] = []
    real = prepared.sha256_file
    monkeypatch.setattr(prepared, "sha256_file",
                        lambda path: (hashed.append(Path(path).name), real(path))[1])
    prepared.prepare(default_model_path(), cache)
    assert hashed == [prepared.GRAPH]


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["graph byte", "data byte", "data byte, mtime kept",
                                    "data truncated", "manifest"])
def test_a_corrupt_copy_is_refused_and_rebuilt(cache: Path, damage: str) -> None:
    directory = _copy_dir(cache)
    data = directory / prepared.DATA
    if damage == "graph byte":
        _flip_byte(directory / prepared.GRAPH, 100)
    elif damage.startswith("data byte"):
        st = data.stat()
        last = st.st_size - prepared.SAMPLE_BYTES  # just after sampled block 1:
        _flip_byte(data, last // (prepared.SAMPLES - 1) + prepared.SAMPLE_BYTES + 999)
        if damage.endswith("mtime kept"):  # only the ctime tells
            os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif damage == "data truncated":
        os.truncate(data, data.stat().st_size - 4096)
    else:
        (directory / prepared.MANIFEST).write_text("{not json")
    sha = hashes.model_sha256(default_model_path(), cache)
    assert prepared.check_copy(directory, sha) is not None
    with pytest.warns(UserWarning, match="refused"):
        path = prepared.prepare(default_model_path(), cache)
    assert path == directory / prepared.GRAPH
    assert prepared.check_copy(directory, sha) is None
    for a, b in zip(_vectors(default_model_path()), _vectors(path), strict=True):
        assert np.abs(a - b).max() <= 1e-6


@pytest.mark.slow
def test_a_stale_copy_is_replaced(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another recipe, onnxruntime or CPU: a new copy; the stale one is removed."""
    old = _copy_dir(cache)
    monkeypatch.setattr(prepared, "RECIPE", "p0-test")
    new = prepared.prepare(default_model_path(), cache).parent
    assert new != old and new.parent == old.parent and not old.exists()
    assert prepared.check_copy(new, hashes.model_sha256(default_model_path(), cache)) is None


@pytest.mark.slow
def test_a_changed_model_gets_its_own_copy(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    shutil.copy(default_model_path(), model)
    first = prepared.prepare(model, tmp_path / "cache")
    proto = onnx.load(str(model))
    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props},
                                        "note": "changed"})
    onnx.save(proto, str(model))
    second = prepared.prepare(model, tmp_path / "cache")
    assert second != first
    assert not first.parent.exists()  # the rewritten model's old copy is collected
    assert hashes.model_sha256(model, tmp_path / "cache") == prepared.sha256_file(model)
    gone = tmp_path / "gone.onnx"
    shutil.copy(default_model_path(), gone)
    of_gone = prepared.prepare(gone, tmp_path / "cache").parent
    gone.unlink()
    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props},
                                        "note": "changed again"})
    onnx.save(proto, str(model))
    third = prepared.prepare(model, tmp_path / "cache")  # a build collects the dead ones
    assert third.exists() and not second.parent.exists() and not of_gone.parent.exists()
    assert len(list((tmp_path / "cache" / "index").glob("*.json"))) == 1


@pytest.mark.slow
def test_two_processes_preparing_at_once_both_get_a_good_copy(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    code = ("import sys; from elmo_runtime.loading.prepared import cache as prepared; "
            "print(prepared.prepare(sys.argv[1], prepared.Path(sys.argv[2])))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(default_model_path()), str(root)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-1000:] for _, err in outs]
    paths = {out.strip() for out, _ in outs}
    assert len(paths) == 1
    directory = Path(paths.pop()).parent
    assert prepared.check_copy(directory, prepared.sha256_file(default_model_path())) is None
    assert [p.name for p in directory.parent.iterdir() if p.name.startswith(".tmp")] == []
    for a, b in zip(_vectors(default_model_path()), _vectors(directory / prepared.GRAPH),
                    strict=True):
        assert np.abs(a - b).max() <= 1e-6


def test_an_unwritable_cache_falls_back_with_a_warning(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(hashes.ENV_CACHE, str(blocker / "cache"))  # cannot be created
    with pytest.warns(UserWarning, match="loading without a prepared copy"):
        path = prepared.load_path(default_model_path(), "cpu", min_bytes=0)
    assert path == default_model_path()
    with pytest.raises(prepared.PrepareError, match="cannot write"):
        prepared.prepare(default_model_path())


def test_a_model_onnxruntime_cannot_prepare_falls_back(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The preparing child fails for another reason than the model (a full disk, a crash)."""
    monkeypatch.setenv(hashes.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.setattr(prepared.sys, "executable", shutil.which("false"))
    model = default_model_path()
    with pytest.warns(UserWarning, match="could not prepare it: exit status 1"):
        assert prepared.load_path(model, "cpu", min_bytes=0) == model
    assert not any((tmp_path / "cache" / "prepared").rglob(prepared.GRAPH))


def test_a_file_that_is_no_onnx_model_loads_as_it_is(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing cached, no warning: the plain load says what is wrong with the file."""
    monkeypatch.setenv(hashes.ENV_CACHE, str(tmp_path / "cache"))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07" + b"not a model" * 100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert prepared.load_path(junk, "cpu", min_bytes=0) == junk
    with pytest.raises(prepared.NotAModel, match="not a readable ONNX model"):
        prepared.prepare(junk)
    assert not (tmp_path / "cache" / "prepared").exists() or not any(
        (tmp_path / "cache" / "prepared").iterdir())


def test_the_key_names_onnxruntime_and_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime as ort

    key = prepared.copy_key()
    assert key.startswith(f"{prepared.RECIPE}-ort{ort.__version__}-")
    assert prepared.cpu_features().split()[0]
    monkeypatch.setattr(prepared, "cpu_features", lambda: "x86_64 avx512f")
    assert prepared.copy_key() != key


HASWELL = {"SSE3", "SSSE3", "SSE41", "SSE42", "AVX", "F16C", "FMA3", "AVX2"}
SAPPHIRE_RAPIDS = {*HASWELL, "AVX512F", "AVX512BW", "AVX512DQ", "AVX512VL", "AVX512VNNI",
                   "AVX512BF16", "AVX512FP16", "VAES", "GFNI", "VPCLMULQDQ"}
SPR_CPUINFO = {"sse3", "ssse3", "sse4_1", "sse4_2", "avx", "f16c", "fma", "avx2", "avx512f",
               "avx512bw", "avx512dq", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
               "vaes", "gfni", "vpclmulqdq", "amx_tile", "amx_int8", "amx_bf16", "avx_vnni"}


@pytest.mark.parametrize(("seen", "cpuinfo", "expected"), [
    # natively, /proc/cpuinfo describes the same CPU: its AMX / AVX-VNNI flags count
    (SAPPHIRE_RAPIDS, SPR_CPUINFO, "x86_64 AVX AVX2 AVX512BF16 AVX512BW AVX512DQ AVX512F "
     "AVX512FP16 AVX512VL AVX512VNNI F16C FMA3 SSE3 SSE41 SSE42 SSSE3 "
     "amx_bf16 amx_int8 amx_tile avx_vnni"),
    # qemu-x86_64 -cpu Haswell on that host: CPUID says Haswell, /proc/cpuinfo the host
    (HASWELL, SPR_CPUINFO, "x86_64 AVX AVX2 F16C FMA3 SSE3 SSE41 SSE42 SSSE3"),
])
def test_the_key_describes_the_cpu_this_process_sees(
        monkeypatch: pytest.MonkeyPatch, seen: set[str], cpuinfo: set[str], expected: str) -> None:
    monkeypatch.setattr(prepared.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(prepared, "_numpy_features", lambda: seen)
    monkeypatch.setattr(prepared, "_cpuinfo_flags", lambda: cpuinfo)
    assert prepared.cpu_features() == expected


def test_arm_cores_with_and_without_dot_product_get_different_keys(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """qemu-aarch64 in a root without /proc: HWCAP alone (measured: cortex-a72 'aarch64 ASIMD',
    neoverse-n1 'aarch64 ASIMD ASIMDDP ASIMDHP'; /proc/cpuinfo gave 'aarch64' for both)."""
    monkeypatch.setattr(prepared.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(prepared, "_cpuinfo_flags", set)
    keys = []
    for seen in ({"NEON", "ASIMD"}, {"NEON", "ASIMD", "ASIMDHP", "ASIMDDP"}):
        monkeypatch.setattr(prepared, "_numpy_features", lambda seen=seen: seen)
        keys.append(prepared.copy_key())
    assert prepared.cpu_features() == "aarch64 ASIMD ASIMDDP ASIMDHP"
    assert keys[0] != keys[1]


def test_cache_location_follows_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.delenv(hashes.ENV_CACHE, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert hashes.cache_root() == tmp_path / "elmo-edge"
    monkeypatch.setenv(hashes.ENV_CACHE, str(tmp_path / "x"))
    assert hashes.cache_root() == tmp_path / "x"


@pytest.mark.parametrize("kind", ["metadata", "custom_op"])
def test_a_strangers_file_is_refused_before_anything_is_cached(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """No optimizing, no cache entry, no warning: the plain load reports what is wrong."""
    monkeypatch.setenv(hashes.ENV_CACHE, str(tmp_path / "cache"))
    proto = onnx.load(str(default_model_path()))
    if kind == "metadata":
        del proto.metadata_props[:]
    else:
        proto.opset_import.add(domain="com.example.evil", version=1)
    stranger = tmp_path / "stranger.onnx"
    onnx.save(proto, str(stranger))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert prepared.load_path(stranger, "cpu", min_bytes=0) == stranger
    assert not (tmp_path / "cache" / "prepared").exists() or not any(
        (tmp_path / "cache" / "prepared").iterdir())
    with pytest.raises(prepared.NotAModel, match="elmo-edge|custom-op"):
        prepared.prepare(stranger)


def test_describing_a_model_prepares_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    """`elmo info` is a look, not a load: it leaves the cache as it was."""
    from elmo_runtime.cli.info import describe_model

    monkeypatch.setenv(hashes.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.setenv(prepared.ENV_SWITCH, "always")
    assert describe_model(default_model_path())["format"] == "elmo-edge-onnx"
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob(prepared.GRAPH))


def test_a_copy_gone_before_onnxruntime_opens_it_falls_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`elmo cache clear` between load_path's check and the open: the model file loads."""
    from elmo_runtime.loading.loaded import open_model

    gone = tmp_path / "removed" / prepared.GRAPH
    monkeypatch.setattr(prepared, "load_path", lambda path, provider="cpu": gone)
    with pytest.warns(UserWarning, match="its prepared copy could not be opened"):
        session = open_model(default_model_path(), "cpu").session
    assert [o.name for o in session.get_outputs()][0] == "layers"


def test_a_malformed_index_entry_is_rehashed(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    model = default_model_path()
    sha = hashes.model_sha256(model, root)
    (entry,) = (root / "index").glob("*.json")
    for junk in ("[1, 2]", "7", "null", '{"stamp": 1}'):
        entry.write_text(junk, encoding="utf-8")
        assert hashes.model_sha256(model, root) == sha
