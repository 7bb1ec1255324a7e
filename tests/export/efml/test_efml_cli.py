"""ELMoForManyLangs models through the whole elmo-edge path, against their own package.

``elmo convert MODEL_DIR``, then ``elmo embed`` (all layers, average, top,
stateful, token cache on and off, shards), ``elmo quantize`` and ``elmo info``
on the converted file, compared with their ``sents2elmo`` (see
support/efml_oracle.py for the models and the oracle).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
efml = pytest.importorskip("elmo_export.efml.model")
from support import efml_random  # noqa: E402
from support.efml_oracle import (  # noqa: E402
    ATOL,
    CONFIGS,
    SENTENCES,
    make_oracle_model,
    max_diff,
    their_layers,
    their_package,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# ---------------------------------------------------------------- the whole path: elmo CLI

# one whitespace-tokenized line per sentence (the CLI's input): no whitespace tokens here
CLI_SENTENCES = [s for s in SENTENCES if "\u3000" not in s] + [["Ωmega", "naïve"]]


def _cli(*args: object):
    from click.testing import CliRunner
    from elmo_runtime.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def _embed(model: Path, sentences: list[list[str]], tmp: Path, *flags: object
           ) -> list[np.ndarray]:
    text = tmp / "in.txt"
    text.write_text("".join(" ".join(s) + "\n" for s in sentences), encoding="utf-8")
    out = tmp / f"out{len(list(tmp.glob('out*')))}.npz"
    _cli("embed", "-m", model, text, out, *flags)
    with np.load(out, allow_pickle=False) as z:
        return [z[str(i)] for i in range(len(sentences))]


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def oracle_model(request, tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    return make_oracle_model(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def converted(oracle_model, tmp_path_factory) -> Path:
    directory, _ = oracle_model
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    result = _cli("convert", directory, "-o", out)
    assert "max |ONNX − float64 reference|" in result.output
    return out


@pytest.mark.slow
def test_elmo_embed_all_matches_their_package(oracle_model, converted, tmp_path):
    directory, _ = oracle_model
    theirs = their_layers(directory, CLI_SENTENCES)
    for flags in ((), ("--token-cache", 0), ("--batch-size", 2)):
        ours = _embed(converted, CLI_SENTENCES, tmp_path, "--all", *flags)
        assert max_diff(ours, theirs) <= ATOL, flags
    h5py = pytest.importorskip("h5py")
    _cli("embed", "-m", converted, tmp_path / "in.txt", tmp_path / "out.hdf5", "--all")
    with h5py.File(tmp_path / "out.hdf5", "r") as f:
        assert max_diff([f[str(i)][...] for i in range(len(CLI_SENTENCES))], theirs) <= ATOL


@pytest.mark.slow
def test_average_and_top_match_their_output_layers(oracle_model, converted, tmp_path):
    directory, _ = oracle_model
    # their default output (np.average over layers) fails on an empty sentence
    sentences = [s for s in CLI_SENTENCES if s]
    pkg, _, _ = their_package()
    embedder = pkg.Embedder(str(directory), batch_size=len(sentences))
    for flag, layer in (("--average", -1), ("--top", None)):
        n_layers = efml.read_model(directory).config.n_layers
        embedder.model.encoder.reset_states()
        with torch.no_grad():
            theirs = embedder.sents2elmo(sentences, output_layer=n_layers if layer is None
                                         else layer)
        ours = _embed(converted, sentences, tmp_path, flag)
        assert max_diff(ours, [np.asarray(t) for t in theirs]) <= ATOL, flag


@pytest.mark.slow
def test_stateful_matches_their_stateful_encoder(oracle_model, converted, tmp_path):
    """Their encoder carries each row's state into the next call; ``--stateful`` does it by
    row too. Sentences pre-sorted by length so that their sort leaves rows in place."""
    directory, _ = oracle_model
    sentences = sorted(CLI_SENTENCES, key=lambda s: -len(s))
    pkg, _, _ = their_package()
    embedder = pkg.Embedder(str(directory), batch_size=len(sentences))
    embedder.model.encoder.reset_states()
    with torch.no_grad():
        first = embedder.sents2elmo(sentences, output_layer=-2)
        second = embedder.sents2elmo(sentences, output_layer=-2)
    ours = _embed(converted, sentences + sentences, tmp_path, "--all", "--stateful",
                  "--batch-size", len(sentences))
    assert max_diff(ours[: len(sentences)], [np.asarray(a) for a in first]) <= ATOL
    assert max_diff(ours[len(sentences):], [np.asarray(a) for a in second]) <= ATOL
    assert max_diff([np.asarray(a) for a in first], [np.asarray(a) for a in second]) > 1e-3


@pytest.mark.slow
def test_info_shows_family_and_vocabularies(oracle_model, converted):
    directory, _ = oracle_model
    model = efml.read_model(directory)
    out = _cli("info", converted).output
    assert "ELMoForManyLangs" in out and f"{len(model.chars):,} code points" in out
    assert (f"{len(model.words):,} words" if model.words else "no word branch") in out
    info = json.loads(_cli("info", converted, "--json").output)
    assert info["family"] == "elmoformanylangs" and info["format_version"] == 3
    assert info["vocabulary"]["chars"] == len(model.chars)


@pytest.mark.slow
def test_quantized_and_sharded_outputs(oracle_model, converted, tmp_path):
    """Downstream tools take a converted model like any other: quantize (with its check
    packing by the model's vocabulary) and sharded output."""
    directory, _ = oracle_model
    theirs = their_layers(directory, CLI_SENTENCES)
    int8 = tmp_path / "int8.onnx"
    _cli("quantize", converted, "-o", int8, "--mode", "int8", "--force")
    ours = _embed(int8, CLI_SENTENCES, tmp_path, "--all")
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape
        if a.size:
            cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
            assert cos.mean() > 0.9
    from elmo_runtime.output.shards import iter_vectors

    text = tmp_path / "in.txt"
    text.write_text("".join(" ".join(s) + "\n" for s in CLI_SENTENCES), encoding="utf-8")
    _cli("embed", "-m", converted, text, tmp_path / "shards", "--shard-size", 3, "--all")
    got = list(iter_vectors(tmp_path / "shards"))
    assert [line for line, _ in got] == list(range(len(CLI_SENTENCES)))
    assert max_diff([a for _, a in got], theirs) <= ATOL


def test_convert_refuses_by_name(tmp_path):
    from click.testing import CliRunner
    from elmo_runtime.cli import main

    d = efml_random.write_random_model(tmp_path / "m")
    (d / efml.ENCODER).unlink()
    result = CliRunner().invoke(main, ["convert", str(d), "-o", str(tmp_path / "x.onnx")])
    assert result.exit_code != 0 and "encoder.pkl: missing" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "x.onnx").exists()
    result = CliRunner().invoke(main, ["convert", str(d), "extra.hdf5", "-o", "x.onnx"])
    assert result.exit_code != 0 and "one directory" in result.output


def test_convert_from_and_config_flags(tmp_path):
    """--from elmoformanylangs and --config FILE, when config.json's file is not found."""
    from click.testing import CliRunner
    from elmo_runtime.cli import main
    from elmo_runtime.cli.info import describe_model

    d = efml_random.write_random_model(tmp_path / "m", words=["Haus"])
    moved = tmp_path / "elsewhere.json"
    (d / "model_config.json").rename(moved)
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(main, ["convert", str(d), "-o", str(out)])
    assert result.exit_code != 0 and "--config FILE" in result.output
    result = CliRunner().invoke(main, ["convert", str(d), "-o", str(out), "--from",
                                       "elmoformanylangs", "--config", str(moved)])
    assert result.exit_code == 0, result.output
    info = describe_model(out)
    assert info["source"]["config"] == "elsewhere.json" and info["vocabulary"]["words"] == 5
    assert "word_ids" in [a["name"] for a in info["inputs"]]
