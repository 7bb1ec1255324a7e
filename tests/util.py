"""Helpers shared by the tests: bilm-tf fixtures, small options, the CLI in-process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

FIXTURE_FILES = (
    "options.json",
    "lm_weights.hdf5",
    "lm_embeddings_sentences.json",
    "lm_embeddings_0.hdf5",
    "lm_embeddings_1.hdf5",
    "lm_embeddings_2.hdf5",
)
FIXTURE_ATOL = 1e-5


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Autouse where imported: tiny models run faster on one intra-op thread.

    Extra threads only add contention (10x slower on a loaded 2-core box).
    The previous setting is restored afterwards.
    """
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fixture_dir() -> Path:
    """The bilm-tf fixtures: $ELMO_FIXTURES, else <repo>/../shared/fixtures/bilm-tf."""
    env = os.environ.get("ELMO_FIXTURES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "bilm-tf"


def require_fixtures() -> Path:
    """The fixture directory, or skip the calling test saying what is missing."""
    d = fixture_dir()
    missing = [name for name in FIXTURE_FILES if not (d / name).is_file()]
    if missing:
        missing_fixtures(
            f"bilm-tf fixtures not found: {', '.join(missing)} missing in {d} "
            "(set ELMO_FIXTURES to the directory holding them)"
        )
    return d


def missing_fixtures(reason: str) -> None:
    """Skip the calling test (:data:`FIXTURES_MISSING` in the reason), or fail it when
    ``ELMO_REQUIRE_FIXTURES=1`` (CI: the bilm-tf conformance tests must run)."""
    if os.environ.get("ELMO_REQUIRE_FIXTURES", "") not in ("", "0"):
        pytest.fail(f"{reason}; ELMO_REQUIRE_FIXTURES is set", pytrace=False)
    pytest.skip(reason)


FIXTURES_MISSING = "bilm-tf fixtures not found"


def fixture_batches(d: Path) -> list[list[list[str]]]:
    """The 10 batches of 3 tokenized sentences, in the order bilm-tf ran them."""
    with open(d / "lm_embeddings_sentences.json", encoding="utf-8") as f:
        lists = json.load(f)
    return [[s.split() for s in batch] for batch in zip(*lists, strict=True)]


def fixture_expected(d: Path) -> list[list[np.ndarray]]:
    """expected[i][k]: (2, n, P) top-layer (forward, backward) of batch i, row k."""
    import h5py

    files = [h5py.File(d / f"lm_embeddings_{k}.hdf5", "r") for k in range(3)]
    try:
        n_batches = len(files[0])
        return [[files[k][str(i)][...] for k in range(3)] for i in range(n_batches)]
    finally:
        for f in files:
            f.close()


def top_layer_halves(layers: np.ndarray, n_tokens: int, proj_dim: int) -> np.ndarray:
    """One row's (L+1, T, 2P) with boundaries -> its fixture layout (2, n, P)."""
    top = np.asarray(layers)[-1, 1 : 1 + n_tokens]
    return np.stack([top[:, :proj_dim], top[:, proj_dim:]])


def small_options(**overrides):
    """Tiny options for random-weight comparisons; lstm/char_cnn fields overridable."""
    from elmo_runtime.format.options import parse_options

    lstm = {
        "dim": 8,
        "projection_dim": 5,
        "n_layers": 3,
        "cell_clip": 2.0,
        "proj_clip": 1.0,
        "use_skip_connections": True,
    }
    cnn = {
        "embedding": {"dim": 3},
        "n_characters": 262,
        "max_characters_per_token": 50,
        "activation": "tanh",
        "n_highway": 1,
        "filters": [[1, 4], [2, 5], [3, 6]],
    }
    for key, value in overrides.items():
        if key in lstm or key in ("cell_clip", "proj_clip"):
            if value is None:
                lstm.pop(key, None)
            else:
                lstm[key] = value
        elif key in cnn:
            cnn[key] = value
        else:
            raise KeyError(key)
    return parse_options({"lstm": lstm, "char_cnn": cnn})


# A batch exercising the edge cases: mixed lengths, an empty sentence, a token
# longer than 48 bytes (truncated mid multibyte character), multibyte UTF-8.
EDGE_BATCH = [
    ["The", "cat", "sat", "on", "the", "mat", "."],
    [],
    ["a" + "é" * 30, "x" * 60],
    ["naïve", "日本語", "🙂", "Zürich"],
    ["one"],
]


def run_elmo(*args: object, input: bytes | None = None, env: dict | None = None) -> Result:
    """``elmo ARGS...`` in-process (click's runner, stderr apart); each argument str()-ed."""
    from elmo_runtime.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], input=input, env=env)


def write_input(directory: Path, data: bytes, name: str = "in.txt") -> Path:
    """``directory/name`` holding the bytes ``data`` (an `elmo embed` input file); its path."""
    path = directory / name
    path.write_bytes(data)
    return path


def run_interrupted(monkeypatch: pytest.MonkeyPatch, sentences: int, *args: object,
                    input: bytes | None = None) -> Result:
    """``elmo ARGS...`` (as :func:`run_elmo`) interrupted after ``sentences`` sentences, as
    by Ctrl-C (:func:`interrupt_after`); later runs are not interrupted."""
    with monkeypatch.context() as m:
        interrupt_after(m, sentences)
        return run_elmo(*args, input=input)


def one_line_error(result: Result, message: str = "", code: int = 1) -> str:
    """The command failed with exit status ``code``, no traceback, nothing on stdout and
    ``message`` in one line on stderr; returns that line.

    An ElmoError (1) is ``Error: ...``; an interrupt (130) and an internal error
    (2) are said plainly; a usage error (2) ends click's usage text with ``Error: ...``.
    """
    from elmo_runtime.cli import EXIT_INTERRUPTED

    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.stdout == "", result.output
    lines = result.stderr.strip().splitlines()
    if not (code == 2 and lines and lines[0].startswith("Usage:")):
        assert len(lines) == 1, result.stderr
    if code != EXIT_INTERRUPTED and not message.startswith("internal error"):
        assert lines[-1].startswith("Error: "), result.stderr
    assert message in lines[-1], result.stderr
    return lines[-1]


def break_build(monkeypatch: pytest.MonkeyPatch, module: object) -> None:
    """Make ``module.build_model`` write a graph off by 0.01 in ``CNN_proj/b_proj``."""
    real_build = module.build_model

    def broken(options, weights):
        weights = dict(weights)
        weights["CNN_proj/b_proj"] = weights["CNN_proj/b_proj"] + 0.01
        return real_build(options, weights)

    monkeypatch.setattr(module, "build_model", broken)


def interrupt_after(monkeypatch: pytest.MonkeyPatch, sentences: int) -> None:
    """Make the next run raise KeyboardInterrupt (as a signal would) after ``sentences``."""
    from elmo_runtime.embedder import Embedder

    real = Embedder.embed_sentences
    done = 0

    def interrupted(self, items, batch_size=64):
        nonlocal done
        for out in real(self, items, batch_size):
            if done == sentences:
                raise KeyboardInterrupt
            done += 1
            yield out

    monkeypatch.setattr(Embedder, "embed_sentences", interrupted)
