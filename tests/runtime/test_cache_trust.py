"""The user cache trusts only the user (issue 23, items 5 and 6): ownership, modes, links, seals.

Another user's cache (a folder chowned to ``nobody``: needs root, as in CI) or one that
others may write is not used; nothing in the cache is followed through a link; a copy
filed under a real model's sha256 by anyone without the cache's secret is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from elmo_runtime import Embedder
from elmo_runtime.compat import converted
from elmo_runtime.compat.sources import locate
from elmo_runtime.embedder import default_model_path
from elmo_runtime.errors import ElmoError
from elmo_runtime.loading import hashes, pulled, trust
from elmo_runtime.loading.prepared import cache as prepared
from elmo_runtime.loading.prepared import inventory
from support.cli import run_elmo
from support.errors import one_line_error

pytestmark = pytest.mark.filterwarnings("ignore::elmo_runtime.loading.prepared.cache."
                                        "PreparedCopyNotice")
NOBODY = 65534
SENTENCES = [["The", "cat", "sat", "."], ["Trust", "no", "one", "else"]]
as_root = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                             reason="giving a folder to another user (chown) needs root")


def _vectors(model: Path) -> list[np.ndarray]:
    return Embedder(model, provider="cpu", threads=1, token_cache_mb=0).embed_batch(SENTENCES)


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(np.abs(x - y).max() <= 1e-6 for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def plain() -> list[np.ndarray]:
    return _vectors(default_model_path())


@pytest.fixture
def always(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(prepared.ENV_SWITCH, "always")


def _give_away(path: Path) -> None:
    os.chown(path, NOBODY, NOBODY)


@pytest.mark.parametrize("how", [
    pytest.param("owned by nobody", marks=as_root), "o+w", "g+w", "parent o+w", "a link"])
def test_a_cache_that_is_not_the_users_is_not_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, always: None,
        plain: list[np.ndarray], how: str) -> None:
    """One warning, the plain load, the right vectors, nothing written in that cache."""
    outer = tmp_path / "outer"
    root = outer / "cache"
    root.mkdir(parents=True, mode=0o700)
    expect = {"owned by nobody": "belongs to another user", "o+w": "writable by others",
              "g+w": "writable by others or its group", "parent o+w": "writable by others",
              "a link": "belongs to another user"}[how]
    if how == "owned by nobody":
        _give_away(root)
    elif how == "o+w":
        os.chmod(root, 0o703)
    elif how == "g+w":
        os.chmod(root, 0o730)
    elif how == "parent o+w":
        os.chmod(outer, 0o777)
    else:  # a link to a folder that is not the user's: the folder is what counts
        if os.geteuid() == 0:
            _give_away(root)
        else:
            os.chmod(root, 0o777)
            expect = "writable by others"
        root = tmp_path / "link"
        root.symlink_to(outer / "cache")
    monkeypatch.setenv(hashes.ENV_CACHE, str(root))
    with pytest.raises(trust.UntrustedCache) as caught:
        trust.trusted_cache_root()
    one_line_error(caught, expect)
    assert "is not used (set ELMO_EDGE_CACHE" in str(caught.value)
    with pytest.warns(UserWarning, match="loading without a prepared copy") as said:
        assert prepared.load_path(default_model_path()) == default_model_path()
    assert len(said) == 1 and expect in str(said[0].message)
    with pytest.warns(UserWarning, match=expect):
        assert _same(_vectors(default_model_path()), plain)
    assert os.listdir(outer / "cache") == []  # no copy, no memo, no secret
    one_line_error(run_elmo("cache", "list"), expect)
    one_line_error(run_elmo("cache", "clear"), expect)


def test_the_users_own_cache_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Made 0700 where missing; a root-owned sticky folder above it (like /tmp) is passed."""
    root = tmp_path / "a" / "b" / "cache"
    monkeypatch.setenv(hashes.ENV_CACHE, str(root))
    assert trust.trusted_cache_root() == Path(os.path.realpath(root))
    for folder in (root, root.parent, root.parent.parent):
        assert os.stat(folder).st_mode & 0o777 == 0o700
    hashes.model_sha256(default_model_path())
    assert (root / trust.SECRET).stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("how", ["o+w", "g+w", "a link"])
def test_a_copy_under_a_prepared_folder_others_may_write_is_not_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, always: None, how: str) -> None:
    """A valid copy was used when ``prepared/`` itself was writable by others (they may
    rename the user's copies between the check and the load) or a link: only its
    subfolders were checked."""
    root = tmp_path / "cache"
    monkeypatch.setenv(hashes.ENV_CACHE, str(root))
    prepared.prepare(default_model_path())
    folder = root / "prepared"
    if how == "a link":
        folder.rename(root / "elsewhere")
        folder.symlink_to(root / "elsewhere", target_is_directory=True)
        expect = "not a link"
    else:
        os.chmod(folder, 0o703 if how == "o+w" else 0o730)
        expect = "writable by others"
    with pytest.warns(UserWarning, match=expect):
        assert prepared.load_path(default_model_path()) == default_model_path()


def test_a_link_in_prepared_survives_clear_with_its_target(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, always: None) -> None:
    """Issue 23.5: `clear` followed prepared/<link> and deleted its target's subfolders."""
    root = tmp_path / "cache"
    monkeypatch.setenv(hashes.ENV_CACHE, str(root))
    copy = prepared.prepare(default_model_path()).parent
    elsewhere = tmp_path / "precious"
    for sub in ("a" * 64, "docs", "p3-ort1-0123456789ab"):
        (elsewhere / sub).mkdir(parents=True)
        (elsewhere / sub / "keep.txt").write_text(sub)
    before = sorted(str(p.relative_to(elsewhere)) for p in elsewhere.rglob("*"))
    links = [root / "prepared" / ("b" * 64), root / "prepared" / "c",
             copy.parent / "p3-ort1-ba9876543210", copy / "extra"]
    for link in links:
        link.symlink_to(elsewhere, target_is_directory=True)
    (root / "index" / "z.json").symlink_to(elsewhere / "docs" / "keep.txt")
    listed = inventory.list_copies()
    assert [c["dir"] for c in listed] == [copy]
    result = run_elmo("cache", "clear")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"removed 1 prepared copy, {listed[0]['bytes'] / 2**20:.1f} MiB\n"
    assert sorted(str(p.relative_to(elsewhere)) for p in elsewhere.rglob("*")) == before
    assert all((elsewhere / s / "keep.txt").read_text() == s
               for s in ("a" * 64, "docs", "p3-ort1-0123456789ab"))
    assert all(link.is_symlink() for link in links[:2])
    assert not copy.exists()


def _forge(root: Path, victim: Path, other: Path, secret: bytes | None) -> Path:
    """The copy of ``other`` filed under ``victim``'s sha256 with a self-consistent manifest,
    sealed with ``secret`` (another cache's) or not at all; returns its folder."""
    made = prepared.prepare(other, root).parent
    sha = hashes.model_sha256(victim, root)
    forged = root / "prepared" / sha / made.name
    shutil.rmtree(forged.parent, ignore_errors=True)
    forged.parent.mkdir(mode=0o700)
    shutil.copytree(made, forged)
    manifest = json.loads((forged / prepared.MANIFEST).read_text())
    manifest["source_sha256"] = sha
    manifest.pop("seal")
    if secret is not None:
        elsewhere = root.parent / "attackers-cache"
        elsewhere.mkdir(mode=0o700, exist_ok=True)
        (elsewhere / trust.SECRET).write_bytes(secret)
        os.chmod(elsewhere / trust.SECRET, 0o600)
        manifest["seal"] = trust.seal(elsewhere, prepared._sealed_part(manifest))
    (forged / prepared.MANIFEST).write_text(json.dumps(manifest))
    return forged


@pytest.mark.parametrize("how", ["unsealed", "another cache's seal",
                                 pytest.param("owned by nobody", marks=as_root)])
def test_a_forged_copy_under_a_real_models_hash_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, always: None,
        plain: list[np.ndarray], how: str) -> None:
    """Issue 23.6: the victim got another model's vectors (max |diff| 1.21)."""
    root = tmp_path / "cache"
    monkeypatch.setenv(hashes.ENV_CACHE, str(root))
    victim = default_model_path()
    other = victim.with_name("default.int8.onnx")
    assert not _same(_vectors(other), plain)  # the forged copy would give other vectors
    forged = _forge(root, victim, other, None if how == "unsealed" else os.urandom(32))
    if how == "owned by nobody":  # sealed with this cache's secret, but filed by nobody
        manifest = json.loads((forged / prepared.MANIFEST).read_text())
        manifest["seal"] = trust.seal(root, prepared._sealed_part(manifest))
        (forged / prepared.MANIFEST).write_text(json.dumps(manifest))
        for path in [forged, *forged.iterdir()]:  # root (this test) can still delete it
            _give_away(path)
    sha = hashes.model_sha256(victim)
    why = prepared.check_copy(forged, sha)
    assert why is not None and ("belongs to another user" if how == "owned by nobody"
                                else "not sealed by this cache") in why
    with pytest.warns(UserWarning, match="refused"):
        copy = prepared.load_path(victim)
    assert copy.parent == forged and prepared.check_copy(forged, sha) is None  # rebuilt
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _same(_vectors(victim), plain)


def test_a_forged_hash_memo_entry_is_not_believed(tmp_path: Path) -> None:
    """An index entry that maps the victim's path to another model's sha256 is rehashed."""
    root = tmp_path / "cache"
    victim = tmp_path / "m.onnx"
    shutil.copyfile(default_model_path(), victim)
    real = hashes.model_sha256(victim, root)
    (entry,) = (root / hashes.INDEX).glob("*.json")
    known = json.loads(entry.read_text())
    known["sha256"] = "0" * 64  # self-consistent but not sealed by this cache
    entry.write_text(json.dumps(known))
    assert hashes.model_sha256(victim, root) == real
    entry.unlink()
    entry.symlink_to(tmp_path / "elsewhere.json")
    (tmp_path / "elsewhere.json").write_text(json.dumps(known))
    assert hashes.model_sha256(victim, root) == real


@pytest.fixture
def pair(bilm_fixtures: Path) -> tuple[Path, Path]:
    return bilm_fixtures / "options.json", bilm_fixtures / "lm_weights.hdf5"


@pytest.mark.parametrize("how", [pytest.param("owned by nobody", marks=as_root), "o+w"])
def test_drop_in_conversions_refuse_a_cache_that_is_not_the_users(
        pair: tuple[Path, Path], tmp_path: Path, how: str) -> None:
    """A one-line error, nothing converted into (or read from) that cache."""
    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    if how == "o+w":
        os.chmod(root, 0o777)
    else:
        _give_away(root)
    with pytest.raises(ElmoError) as caught:
        converted.converted_model(locate(*pair), root)
    one_line_error(caught, "belongs to another user" if how != "o+w" else "writable by others")
    assert os.listdir(root) == []


def test_a_link_in_place_of_a_conversion_is_not_followed(
        pair: tuple[Path, Path], tmp_path: Path) -> None:
    root = tmp_path / "cache"
    source = locate(*pair)
    first = converted.converted_model(source, root)
    key = first.parent.name
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(first.parent, elsewhere)
    shutil.rmtree(first.parent)
    first.parent.symlink_to(elsewhere, target_is_directory=True)
    again = converted.converted_model(locate(*pair), root)
    assert again == root / "converted" / key / "model.onnx"
    assert not again.parent.is_symlink() and sorted(os.listdir(elsewhere)) == [
        "model.onnx", "source.json"]


@as_root
def test_a_pulled_model_in_another_users_cache_is_not_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cache"
    folder = root / pulled.PULLED / "tiny"
    folder.mkdir(parents=True, mode=0o700)
    shutil.copyfile(default_model_path(), folder / pulled.MODEL)
    assert pulled.pulled_model("tiny", root) == folder / pulled.MODEL
    _give_away(folder)
    with pytest.raises(trust.UntrustedCache) as caught:
        pulled.pulled_model("tiny", root)
    one_line_error(caught, "belongs to another user")
    os.chown(folder, 0, 0)
    (folder / pulled.MODEL).unlink()
    (folder / pulled.MODEL).symlink_to(default_model_path())
    with pytest.raises(trust.UntrustedCache, match="not a regular file"):
        pulled.pulled_model("tiny", root)
    _give_away(root)
    with pytest.raises(trust.UntrustedCache, match="belongs to another user"):
        pulled.pulled_model("tiny", root)
