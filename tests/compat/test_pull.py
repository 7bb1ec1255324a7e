"""`elmo pull NAME` (issue 22.5) against a mirror on loopback (support.mirror): progress,
resume after a kill -9, size / sha256 / first-download mismatches refused, nothing under a
final name until verified, only https (and http to this machine), and the pulled name
working as --model and in both drop-ins. Nothing leaves the machine: every registry URL
goes through $ELMO_EDGE_MODEL_MIRROR to the loopback server."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from elmo_runtime.compat.allennlp import ElmoEmbedder
from elmo_runtime.compat.pull import PullError, _content_range, check_url, pull
from elmo_runtime.compat.simple_elmo import ElmoModel
from elmo_runtime.embedder import Embedder
from elmo_runtime.errors import ModelError
from elmo_runtime.models.published import get_published, published_models
from support import REPO
from support.cli import run_elmo
from support.errors import one_line_error
from support.mirror import Mirror, serve_mirror
from support.processes import default_signals

OPTIONS = "/models.example.org/tiny/options.json"
WEIGHTS = "/models.example.org/tiny/weights.hdf5"


def registry(tmp_path: Path, *, options: dict | None = None,
             weights: dict | None = None, name: str = "tiny-test") -> Path:
    """A one-model $ELMO_EDGE_EXTRA_MODELS file whose URLs the mirror serves."""
    entry = {"name": name, "format": "pair", "description": "the bilm-tf test biLM",
             "approx_size": "0.5 MB", "license": "Apache-2.0", "citation": "bilm-tf tests",
             "files": [{"role": "options", "urls": [f"https:/{OPTIONS}"], **(options or {})},
                       {"role": "weights", "urls": [f"https:/{WEIGHTS}"], **(weights or {})}]}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"models": [entry]}))
    return path


@pytest.fixture
def mirror(bilm_fixtures: Path) -> Iterator[Mirror]:
    files = {OPTIONS: (bilm_fixtures / "options.json").read_bytes(),
             WEIGHTS: (bilm_fixtures / "lm_weights.hdf5").read_bytes()}
    with serve_mirror(Mirror(files=files)) as m:
        yield m


@pytest.fixture
def env(tmp_path: Path, mirror: Mirror, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Cache, mirror and the extra registry, for this process and its children."""
    values = {"ELMO_EDGE_CACHE": str(tmp_path / "cache"),
              "ELMO_EDGE_MODEL_MIRROR": mirror.url,
              "ELMO_EDGE_EXTRA_MODELS": str(registry(tmp_path))}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def pulled(tmp_path: Path, name: str = "tiny-test") -> Path:
    return tmp_path / "cache" / "pulled" / name


def test_pull_verifies_converts_and_the_name_works_everywhere(
        tmp_path: Path, env: dict, mirror: Mirror, bilm_fixtures: Path) -> None:
    seen: list[tuple[str, int, int | None]] = []
    model = pull("tiny-test", progress=lambda label, done, total: seen.append(
        (label, done, total)))
    assert model == pulled(tmp_path) / "model.onnx" and model.is_file()
    size = (bilm_fixtures / "lm_weights.hdf5").stat().st_size
    weights_progress = [s for s in seen if s[0] == "tiny-test weights.hdf5"]
    assert weights_progress[0] == ("tiny-test weights.hdf5", 0, size)
    assert weights_progress[-1] == ("tiny-test weights.hdf5", size, size)
    record = json.loads((pulled(tmp_path) / "pulled.json").read_text())
    digest = hashlib.sha256((bilm_fixtures / "lm_weights.hdf5").read_bytes()).hexdigest()
    assert {"file": "weights.hdf5", "url": f"https:/{WEIGHTS}", "size": size,
            "sha256": digest} in record["files"]
    requests = len(mirror.log)
    assert pull("tiny-test") == model and len(mirror.log) == requests  # pulled once

    sentence = ["The", "cat", "sat"]
    by_files = ElmoEmbedder(bilm_fixtures / "options.json", bilm_fixtures / "lm_weights.hdf5",
                            stateful=False).embed_sentence(sentence)
    np.testing.assert_array_equal(ElmoEmbedder("tiny-test", stateful=False)
                                  .embed_sentence(sentence), by_files)
    np.testing.assert_array_equal(Embedder("tiny-test").embed_sentence(sentence), by_files)
    simple = ElmoModel()
    simple.load("tiny-test")
    assert simple.get_elmo_vectors([sentence], layers="top").shape == (1, 3, by_files.shape[-1])
    text = tmp_path / "in.txt"
    text.write_text("The cat sat\n")
    result = run_elmo("embed", text, tmp_path / "out.npz", "--model", "tiny-test")
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "out.npz") as z:
        np.testing.assert_array_equal(z["0"], by_files)


def test_the_command_shows_progress_and_says_what_to_use(env: dict) -> None:
    result = run_elmo("pull", "tiny-test")
    assert result.exit_code == 0, result.output
    assert "tiny-test weights.hdf5: 0.4 of 0.4 MiB (100%)" in result.stderr
    assert "pulled tiny-test:" in result.stderr and "--model tiny-test" in result.stderr


def test_resume_after_kill(tmp_path: Path, env: dict, mirror: Mirror,
                           bilm_fixtures: Path) -> None:
    """kill -9 mid-download, pull again: the rest is asked for with Range, the result is
    byte-identical, and nothing was under the final name in between."""
    mirror.chunk, mirror.delay_s = 4096, 0.03  # ~3 s for the weights
    part = pulled(tmp_path) / ".weights.hdf5.part"
    child = subprocess.Popen([sys.executable, "-m", "elmo_runtime", "pull", "tiny-test"],
                             env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, preexec_fn=default_signals)
    try:
        deadline = time.monotonic() + 60
        while not (part.exists() and part.stat().st_size > 40_000):
            assert time.monotonic() < deadline and child.poll() is None, "no download seen"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        child.kill()
    have = part.stat().st_size
    size = (bilm_fixtures / "lm_weights.hdf5").stat().st_size
    assert 0 < have < size
    assert not (pulled(tmp_path) / "weights.hdf5").exists()
    assert not (pulled(tmp_path) / "model.onnx").exists()
    mirror.delay_s = 0.0
    pull("tiny-test", progress=lambda *a: None)
    assert (WEIGHTS, f"bytes={have}-") in mirror.log
    assert ((pulled(tmp_path) / "weights.hdf5").read_bytes()
            == (bilm_fixtures / "lm_weights.hdf5").read_bytes())
    assert not part.exists()


def test_a_server_that_ignores_range_sends_it_all_again(
        tmp_path: Path, env: dict, mirror: Mirror, bilm_fixtures: Path) -> None:
    folder = pulled(tmp_path)
    folder.mkdir(parents=True, mode=0o700)
    (folder / ".weights.hdf5.part").write_bytes(b"junk that a 200 answer replaces")
    mirror.honour_range = False
    pull("tiny-test", progress=lambda *a: None)
    assert ((folder / "weights.hdf5").read_bytes()
            == (bilm_fixtures / "lm_weights.hdf5").read_bytes())


def test_a_cut_transfer_keeps_the_part_and_installs_nothing(
        tmp_path: Path, env: dict, mirror: Mirror) -> None:
    mirror.declare_extra = 1000
    with pytest.raises(PullError) as caught:
        pull("tiny-test", progress=lambda *a: None)
    one_line_error(caught, "download interrupted at")
    folder = pulled(tmp_path)
    assert not (folder / "weights.hdf5").exists() and not (folder / "model.onnx").exists()
    assert (folder / ".options.json.part").exists()  # kept, to resume
    kept = (folder / ".options.json.part").stat().st_size
    mirror.declare_extra = 0
    pull("tiny-test", progress=lambda *a: None)  # resumes where the cut left it
    assert (OPTIONS, f"bytes={kept}-") in mirror.log
    assert (folder / "model.onnx").is_file()


@pytest.mark.parametrize(("field", "value", "message"), [
    ("size_bytes", 12, "450896 bytes declared by the server differs from the published size"),
    ("sha256", "0" * 64, "differs from the published sha256"),
    ("md5", "0" * 32, "differs from the published md5"),
])
def test_a_file_unlike_the_registry_is_refused(
        tmp_path: Path, env: dict, monkeypatch: pytest.MonkeyPatch, field: str, value: object,
        message: str) -> None:
    monkeypatch.setenv("ELMO_EDGE_EXTRA_MODELS",
                       str(registry(tmp_path, weights={field: value})))
    with pytest.raises(PullError) as caught:
        pull("tiny-test", progress=lambda *a: None)
    one_line_error(caught, message)
    result = run_elmo("pull", "tiny-test")  # the command: exit 1, the error last, no traceback
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1].startswith("Error: http")
    folder = pulled(tmp_path)
    assert not any(p.name.startswith("weights") or p.name.startswith(".weights")
                   for p in folder.iterdir())
    assert not (folder / "model.onnx").exists()


def test_a_file_that_changed_since_its_first_download_is_refused(
        tmp_path: Path, env: dict, mirror: Mirror) -> None:
    pull("tiny-test", progress=lambda *a: None)
    import shutil

    shutil.rmtree(pulled(tmp_path))
    mirror.files[WEIGHTS] = mirror.files[WEIGHTS][:-1] + b"\x00"  # same size, other bytes
    with pytest.raises(PullError) as caught:
        pull("tiny-test", progress=lambda *a: None)
    one_line_error(caught, "differs from the sha256 of its first download")
    assert not (pulled(tmp_path) / "weights.hdf5").exists()


def test_a_download_that_does_not_convert_is_dropped_with_its_first_download_record(
        tmp_path: Path, env: dict, mirror: Mirror) -> None:
    """A model without a published size or hash takes whatever the server sends; when
    that does not convert, the files and their first-download records go, so a later
    pull (from a good server) downloads again instead of failing for good."""
    good = dict(mirror.files)
    mirror.files = {OPTIONS: b"0123456789", WEIGHTS: b"0123456789"}
    result = run_elmo("pull", "tiny-test")  # progress lines, then the error in one line
    assert result.exit_code == 1 and "Traceback" not in result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "options.json: not valid JSON" in last
    assert "the files downloaded now were deleted" in last
    folder, trust = pulled(tmp_path), tmp_path / "cache" / "pulled" / "trust"
    assert not (folder / "options.json").exists() and not (folder / "weights.hdf5").exists()
    assert not any(trust.iterdir())
    mirror.files = good
    assert pull("tiny-test", progress=lambda *a: None).is_file()
    assert len(list(trust.iterdir())) == 2


def test_only_https_and_loopback_http(tmp_path: Path, env: dict, mirror: Mirror,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_url("https://example.org/x") == "https://example.org/x"
    assert check_url("http://127.0.0.1:1/x") == "http://127.0.0.1:1/x"
    for url in ("http://example.org/x", "ftp://example.org/x", "file:///etc/passwd",
                "http://10.0.0.1/x"):
        with pytest.raises(PullError, match="only https URLs are fetched"):
            check_url(url)
    monkeypatch.setenv("ELMO_EDGE_MODEL_MIRROR", "http://192.0.2.1:9")
    with pytest.raises(PullError, match="only https URLs are fetched"):
        pull("tiny-test", progress=lambda *a: None)
    monkeypatch.setenv("ELMO_EDGE_MODEL_MIRROR", mirror.url)
    mirror.redirects[OPTIONS] = "http://example.org/options.json"
    with pytest.raises(PullError) as caught:
        pull("tiny-test", progress=lambda *a: None)
    one_line_error(caught, "http://example.org/options.json: refused")
    assert str(caught.value).count("refused") == 1  # each URL's same reason said once
    assert not (pulled(tmp_path) / "options.json").exists()


def test_a_content_range_that_is_not_bytes_start_end_total_is_one_pull_error() -> None:
    assert _content_range("bytes 5-9/10", 5, "u") == 10
    assert _content_range("bytes 5-9/*", 5, "u") is None
    for value in ("bytes 0-3/abc", "bytes x-3/4", None):  # a bad total was a ValueError
        with pytest.raises(PullError, match="is not bytes START-END/TOTAL"):
            _content_range(value, 0, "u")


def test_unknown_and_unpulled_names(tmp_path: Path, env: dict) -> None:
    one_line_error(run_elmo("pull", "no-such-model"), "no published model named 'no-such-model'")
    text = tmp_path / "in.txt"
    text.write_text("a\n")
    result = run_elmo("embed", text, tmp_path / "o.npz", "--model", "allennlp-small")
    one_line_error(result, "model 'allennlp-small' is published but not pulled yet: run "
                           "`elmo pull allennlp-small`")
    with pytest.raises(ModelError, match="not pulled yet"):
        ElmoEmbedder("seqvec")


def test_an_owner_documenting_only_http_is_named_when_https_fails(
        tmp_path: Path, env: dict, mirror: Mirror, monkeypatch: pytest.MonkeyPatch) -> None:
    """NLPL documents http:// URLs; elmo pull fetches their https form only and, when that
    fails, names the documented URL for a download by hand (it is never fetched)."""
    missing = "/models.example.org/tiny/gone.zip"
    monkeypatch.setenv("ELMO_EDGE_EXTRA_MODELS", str(registry(tmp_path, options={
        "urls": [f"https:/{missing}"], "http_url": f"http:/{missing}"})))
    with pytest.raises(PullError) as caught:
        pull("tiny-test", progress=lambda *a: None)
    one_line_error(caught, f"{mirror.url.rstrip('/')}{missing}: HTTP 404 Not Found; its owner "
                           f"documents http:/{missing}, which elmo pull does not fetch (plain "
                           "http): download it yourself and elmo convert it")
    assert mirror.log == [(missing, None)]  # its https form, once; the http URL never
    bad = registry(tmp_path, options={"http_url": f"https:/{missing}"})
    monkeypatch.setenv("ELMO_EDGE_EXTRA_MODELS", str(bad))
    with pytest.raises(ModelError, match="http_url must be an http:// URL or absent"):
        published_models()


def test_a_key_given_twice_in_a_model_list_is_refused(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Two "sha256" of one file in $ELMO_EDGE_EXTRA_MODELS: which one would be checked?"""
    path = registry(tmp_path, weights={"sha256": "0" * 64})
    text = path.read_text()
    path.write_text(text.replace('"sha256"', f'"sha256": "{"1" * 64}", "sha256"'))
    assert path.read_text().count('"sha256"') == 2
    monkeypatch.setenv("ELMO_EDGE_EXTRA_MODELS", str(path))
    with pytest.raises(ModelError) as caught:
        published_models()
    one_line_error(caught, f'{path}: cannot read the model list (the key "sha256" is repeated '
                           "in one object)")


def test_the_published_registry() -> None:
    """Every entry has https URLs, a size to show, a licence and a citation; published
    hashes are well-formed; SeqVec's options sha256 is that of the verbatim copy."""
    models = {m.name: m for m in published_models()}
    assert {"allennlp-small", "allennlp-medium", "allennlp-original", "allennlp-original-5.5b",
            "seqvec"} <= set(models)
    assert any(name.startswith("nlpl-") for name in models)
    for model in models.values():
        assert model.approx_size and model.license and model.citation, model.name
        for f in model.files:
            assert all(check_url(url) for url in f.urls)
            assert f.sha256 is None or len(f.sha256) == 64
            assert f.md5 is None or len(f.md5) == 32
            if f.http_url is not None:  # the owner's plain-http URL: its https form is tried
                assert f.http_url.replace("http://", "https://", 1) in f.urls, model.name
        if model.name.startswith("nlpl-"):  # NLPL documents http:// URLs only
            assert all(f.http_url for f in model.files), model.name
    options = get_published("seqvec").files[0]
    copy = (REPO / "tests" / "support" / "seqvec_options.json").read_bytes()
    assert options.sha256 == hashlib.sha256(copy).hexdigest()
    assert options.size_bytes == len(copy)
    assert options.md5 == hashlib.md5(copy).hexdigest()  # Kipoi's published md5
    listing = run_elmo("pull", "--list")
    assert listing.exit_code == 0 and "seqvec: SeqVec" in listing.output
    assert "licence: MIT" in listing.output


def test_an_extra_model_listed_without_size_licence_or_citation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only name, format, description and files are required; --list says what is missing
    (it printed an empty "cite: ")."""
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"models": [{
        "name": "mine", "format": "pair", "description": "my biLM",
        "files": [{"role": "options", "urls": ["https:/" + OPTIONS]},
                  {"role": "weights", "urls": ["https:/" + WEIGHTS]}]}]}))
    monkeypatch.setenv("ELMO_EDGE_EXTRA_MODELS", str(path))
    listing = run_elmo("pull", "--list")
    assert listing.exit_code == 0, listing.output
    assert ("mine: my biLM\n    size unknown; licence: unknown\n    cite: not given\n"
            in listing.output)
