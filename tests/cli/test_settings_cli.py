"""One resolved setting through the commands: the model found once, the same options and
defaults in `elmo embed` and `elmo serve`, the same mix recorded by every engine."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from elmo_runtime import models
from elmo_runtime.cli import main
from elmo_runtime.loading import model_file
from elmo_runtime.mix import ScalarMix, save_mix
from elmo_runtime.output.shards import read_manifest
from elmo_runtime.settings import EmbedderSettings
from support.requires import requires

EMBEDDER_OPTIONS = ("--model", "--all", "--top", "--average", "--mix", "--provider", "--threads",
                    "--max-batch-tokens", "--token-cache")


def _counting(counts: Counter, name: str, fn: Callable) -> Callable:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        counts[name] += 1
        return fn(*args, **kwargs)
    return wrapper


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Calls of the resolver, the sniffer and registry.json reads, however they are imported."""
    counts: Counter = Counter()
    monkeypatch.setattr(model_file, "resolve_model",
                        _counting(counts, "resolve", model_file.resolve_model))
    monkeypatch.setattr(model_file, "sniff", _counting(counts, "sniff", model_file.sniff))
    monkeypatch.setattr(models, "_read_registry",
                        _counting(counts, "registry", models._read_registry))
    return counts


def _invoke(*args: object) -> Any:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("layout", ["file", "shards"])
def test_embed_resolves_and_sniffs_the_model_once(counts: Counter, toy_model_path: Path,
                                                  tmp_path: Path, layout: str) -> None:
    src = tmp_path / "in.txt"
    src.write_text("a b\nc\n")
    out = str(tmp_path / "out.npz") if layout == "file" else f"{tmp_path / 'out'}/"
    _invoke("embed", src, out, "--model", toy_model_path, "--top")
    assert (tmp_path / "out.npz").is_file() if layout == "file" else (tmp_path / "out").is_dir()
    assert counts == {"resolve": 1, "sniff": 1, "registry": 1}  # the name check of a path


def test_embed_of_a_bundled_name_resolves_it_once(counts: Counter, tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("a b\n")
    _invoke("embed", src, tmp_path / "out.npz", "--model", "default-int8", "--top")
    assert counts["resolve"] == 1 and counts["sniff"] == 1


def test_quantize_resolves_and_sniffs_the_model_once(counts: Counter, tiny_model_path: Path,
                                                     tmp_path: Path) -> None:
    check = tmp_path / "check.txt"
    check.write_text("The cat sat .\n")
    _invoke("quantize", tiny_model_path, "-o", tmp_path / "q.onnx", "--check", check)
    assert counts["resolve"] == 1 and counts["sniff"] == 1


def test_an_actor_never_reads_the_registry(toy_model_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ray actor builds its Embedder from the driver's resolved settings (data)."""
    from elmo_runtime.output.ray_engine import EmbedBatches

    settings = EmbedderSettings("default", provider="cpu", threads=1)
    settings = settings.resolved()  # the driver: the bundled name looked up here, once

    def no_registry() -> None:
        raise AssertionError("registry.json read in an actor")

    monkeypatch.setattr(models, "_read_registry", no_registry)
    actor = EmbedBatches(settings.to_dict(), "float32")
    assert str(actor._emb.model_path) == settings.path


def _params(command: click.Command) -> dict[str, click.Parameter]:
    return {opt: p for p in command.params for opt in p.opts if opt in EMBEDDER_OPTIONS}


def test_embed_and_serve_take_the_same_embedder_options() -> None:
    from elmo_runtime.serve.command import serve_command

    embed = _params(main.get_command(click.Context(main), "embed"))
    serve = _params(serve_command)
    assert sorted(embed) == sorted(serve) == sorted(EMBEDDER_OPTIONS)
    for name in EMBEDDER_OPTIONS:
        a, b = embed[name], serve[name]
        assert (a.name, a.default, repr(a.type), a.help) == (b.name, b.default, repr(b.type),
                                                            b.help), name


def _mix_file(path: Path, weights: list[float]) -> Path:
    save_mix(path, ScalarMix(weights))
    return path


def test_a_mix_file_of_zero_weights_is_recorded_as_given(toy_model_path: Path,
                                                          tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("a b\nc\n")
    mix = _mix_file(tmp_path / "zeros.json", [0.0, 0.0, 0.0])
    _invoke("embed", src, f"{tmp_path / 'out'}/", "--model", toy_model_path, "--mix", mix)
    recorded = read_manifest(tmp_path / "out")["settings"]["mix"]
    assert recorded == {"weights": [0.0, 0.0, 0.0], "gamma": 1.0, "do_layer_norm": False}


@pytest.mark.slow
@requires("ray", "pyarrow")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray's own
def test_ray_and_local_runs_record_the_same_mix(toy_model_path: Path, tmp_path: Path) -> None:
    """The mix as the manifest records it, for a flag and for a mix file of zero weights (one
    local Ray for the three runs: the CLI joins a Ray already started in its process)."""
    from elmo_runtime.output.ray_session import ray_session

    src = tmp_path / "in.txt"
    src.write_text("a b\nc\n")
    mix = _mix_file(tmp_path / "zeros.json", [0.0, 0.0, 0.0])
    runs = {"top": ["--top"], "zeros": ["--mix", str(mix)], "average": ["--average"]}
    with ray_session(None, cpus=2):
        for name, flags in runs.items():
            _invoke("embed", src, tmp_path / f"ray-{name}", "--model", toy_model_path, *flags,
                    "--engine", "ray", "--actors", "1", "--threads", "1", "--provider", "cpu")
    for name, flags in runs.items():
        _invoke("embed", src, f"{tmp_path / name}/", "--model", toy_model_path, *flags)
        local, ray = read_manifest(tmp_path / name), read_manifest(tmp_path / f"ray-{name}")
        assert (local["engine"], ray["engine"]) == ("local", "ray")
        assert local["settings"]["mix"] == ray["settings"]["mix"], name
        assert local["settings"]["model"] == ray["settings"]["model"]
    assert read_manifest(tmp_path / "ray-zeros")["settings"]["mix"] == {
        "weights": [0.0, 0.0, 0.0], "gamma": 1.0, "do_layer_norm": False}
    assert read_manifest(tmp_path / "ray-average")["settings"]["mix"] == "average"
