"""Models as published: pairs, folders, NLPL / SeqVec ZIPs, and the unsafe ZIPs refused."""

from __future__ import annotations

import gzip
import stat
import struct
import zipfile
from pathlib import Path

import pytest
from elmo_runtime.compat import sources
from elmo_runtime.compat.sources import SourceError, extract, locate

OPTIONS = b'{"lstm": {}, "char_cnn": {}}'
HDF5 = b"\x89HDF\r\n\x1a\n" + b"\x00" * 64


def make_zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED
             ) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_nlpl_zip_flat_with_vocab(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "210.zip", {"options.json": OPTIONS, "model.hdf5": HDF5,
                                        "vocab.txt": b"<S>\n</S>\n"})
    s = locate(z)
    assert (s.archive, s.options, s.weights, s.vocab) == (z, "options.json", "model.hdf5",
                                                           "vocab.txt")
    options, weights = extract(s, tmp_path)
    assert options.read_bytes() == OPTIONS and weights.read_bytes() == HDF5


def test_zip_without_vocab_gzip_vocab_and_nested_folder(tmp_path: Path) -> None:
    assert locate(make_zip(tmp_path / "a.zip", {"options.json": OPTIONS,
                                                "model.hdf5": HDF5})).vocab is None
    gz = gzip.compress(b"the\nof\n")
    s = locate(make_zip(tmp_path / "b.zip", {"m/options.json": OPTIONS, "m/model.hdf5": HDF5,
                                             "m/vocab.txt.gz": gz}))
    assert (s.options, s.weights, s.vocab) == ("m/options.json", "m/model.hdf5",
                                               "m/vocab.txt.gz")
    seqvec = locate(make_zip(tmp_path / "seqvec.zip", {
        "uniref50_v2/options.json": OPTIONS, "uniref50_v2/weights.hdf5": HDF5}))
    assert seqvec.weights == "uniref50_v2/weights.hdf5"


def test_folders(tmp_path: Path) -> None:
    nlpl = tmp_path / "nlpl"
    nlpl.mkdir()
    for name, data in (("options.json", OPTIONS), ("model.hdf5", HDF5), ("x.hdf5", HDF5),
                       ("vocab.txt.gz", b""), ("vocab.txt", b"")):
        (nlpl / name).write_bytes(data)
    s = locate(nlpl)
    assert Path(s.weights).name == "model.hdf5" and Path(s.vocab).name == "vocab.txt.gz"
    bilm = tmp_path / "bilm"
    bilm.mkdir()
    for name in ("elmo_options.json", "elmo_weights.hdf5", "lm_embeddings_0.hdf5"):
        (bilm / name).write_bytes(HDF5 if name.endswith("hdf5") else OPTIONS)
    assert Path(locate(bilm).weights).name == "elmo_weights.hdf5"
    outer = tmp_path / "seqvec"
    (outer / "uniref50_v2").mkdir(parents=True)
    (outer / "uniref50_v2" / "options.json").write_bytes(OPTIONS)
    (outer / "uniref50_v2" / "weights.hdf5").write_bytes(HDF5)
    assert Path(locate(outer).weights) == outer / "uniref50_v2" / "weights.hdf5"


def test_what_is_not_a_source(tmp_path: Path) -> None:
    efml = tmp_path / "efml"
    efml.mkdir()
    (efml / "config.json").write_text("{}")
    with pytest.raises(SourceError, match="ELMoForManyLangs"):
        locate(efml)
    two = tmp_path / "two"
    two.mkdir()
    for name in ("options.json", "a.hdf5", "b.hdf5"):
        (two / name).write_bytes(b"{}")
    with pytest.raises(SourceError, match=r"found a.hdf5, b.hdf5"):
        locate(two)
    with pytest.raises(SourceError, match="no options.json"):
        locate(make_zip(tmp_path / "w.zip", {"model.hdf5": HDF5}))
    (tmp_path / "o.json").write_bytes(OPTIONS)
    (tmp_path / "w.hdf5").write_bytes(HDF5)
    with pytest.raises(SourceError, match="arguments swapped"):
        locate(tmp_path / "w.hdf5", tmp_path / "o.json")
    with pytest.raises(SourceError, match="no such file"):
        locate(tmp_path / "missing.zip")


@pytest.mark.parametrize("name", ["../evil.hdf5", "/etc/options.json", "a/../../x",
                                  "C:/model.hdf5", "..\\x.json"])
def test_path_traversal_refused(tmp_path: Path, name: str) -> None:
    z = make_zip(tmp_path / "t.zip", {"options.json": OPTIONS, "model.hdf5": HDF5,
                                      name: b"x"})
    with pytest.raises(SourceError, match="outside the archive"):
        locate(z)


def test_symlink_entry_refused(tmp_path: Path) -> None:
    z = tmp_path / "link.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("options.json", OPTIONS)
        link = zipfile.ZipInfo("model.hdf5")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(SourceError, match="symbolic link"):
        locate(z)


def test_zip_bomb_ratio_refused(tmp_path: Path) -> None:
    z = make_zip(tmp_path / "bomb.zip", {"options.json": OPTIONS,
                                         "model.hdf5": b"\x00" * (64 * 2**20)})
    with pytest.raises(SourceError, match="zip bomb"):
        locate(z)


def test_zip_total_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "MAX_TOTAL_BYTES", 1000)
    z = make_zip(tmp_path / "big.zip", {"options.json": OPTIONS, "model.hdf5": HDF5 * 20},
                 zipfile.ZIP_STORED)
    with pytest.raises(SourceError, match="uncompressed"):
        locate(z)


def test_declared_size_lie_refused(tmp_path: Path) -> None:
    """A header that declares fewer bytes than the member holds stops the copy."""
    payload = b"\x89HDF" + bytes(range(256)) * 40
    z = make_zip(tmp_path / "lie.zip", {"options.json": OPTIONS, "model.hdf5": payload},
                 zipfile.ZIP_STORED)
    data = bytearray(z.read_bytes())
    small = len(payload) // 2
    # the central directory's uncompressed size of model.hdf5 (the stored local header is
    # left alone: zipfile reads sizes from the central directory)
    at = data.rfind(b"PK\x01\x02")
    while data[at + 46: at + 46 + 10] != b"model.hdf5":
        at = data.rfind(b"PK\x01\x02", 0, at)
    data[at + 24: at + 28] = struct.pack("<I", small)
    z.write_bytes(bytes(data))
    source = locate(z)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SourceError, match="declared|cannot read"):
        extract(source, out)


@pytest.mark.parametrize("layout", ["flat+vocab", "flat", "nested+gz"])
def test_elmo_convert_an_nlpl_zip(bilm_fixtures: Path, tmp_path: Path, layout: str) -> None:
    """`elmo convert 210.zip` as downloaded: nothing to unpack, nothing left behind."""
    from elmo_runtime.cli.info import describe_model
    from support.cli import run_elmo

    prefix = "210/" if layout.startswith("nested") else ""
    members = {prefix + "options.json": (bilm_fixtures / "options.json").read_bytes(),
               prefix + "model.hdf5": (bilm_fixtures / "lm_weights.hdf5").read_bytes()}
    if "vocab" in layout:
        members["vocab.txt"] = (bilm_fixtures / "vocab_test.txt").read_bytes()
    if "gz" in layout:
        members[prefix + "vocab.txt.gz"] = gzip.compress(b"<S>\n</S>\n<UNK>\nthe\n")
    archive = make_zip(tmp_path / "210.zip", members)
    result = run_elmo("convert", archive)
    assert result.exit_code == 0, result.output
    assert "no -o given: writing" in result.stderr and (tmp_path / "210.onnx").is_file()
    assert describe_model(tmp_path / "210.onnx")["options"]["lstm"]["projection_dim"] == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["210.onnx", "210.zip"]


def test_elmo_convert_refuses_an_unsafe_zip(tmp_path: Path) -> None:
    from support.cli import run_elmo
    from support.errors import one_line_error

    archive = make_zip(tmp_path / "t.zip", {"options.json": OPTIONS, "model.hdf5": HDF5,
                                            "../../evil": b"x"})
    line = one_line_error(run_elmo("convert", archive, "-o", tmp_path / "x.onnx"))
    assert "path traversal" in line and not (tmp_path / "x.onnx").exists()
