"""The drop-ins against the libraries they replace, run for real in their own venvs.

``bash .ci/oracles.sh`` builds ``.venv-a09`` (AllenNLP 0.9.0 on torch 2.13) and ``.venv-se``
(simple-elmo 0.9.2 on tensorflow-cpu 2.15.1); each test runs the same script under the
oracle and under the drop-in (``tests/compat/oracles/``) and compares every array to 1e-5.
Without a venv the test skips saying so (``ELMO_REQUIRE_ORACLES=1`` makes that a failure,
as CI does). Marked ``oracle`` and ``slow``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.oracle, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "oracles"
ATOL = 1e-5
VENVS = {
    "allennlp": ("ELMO_ORACLE_A09", ".venv-a09", "AllenNLP 0.9"),
    "simple_elmo": ("ELMO_ORACLE_SE", ".venv-se", "simple-elmo 0.9.2"),
}
# SeqVec's published options.json (MODELS_NOTES.md §2), training keys and all: the original
# ELMo's shapes
SEQVEC_OPTIONS = json.loads((REPO / "tests" / "support" / "seqvec_options.json").read_text())
SMALL_OPTIONS = {
    "bidirectional": True,
    "char_cnn": {"activation": "relu", "embedding": {"dim": 4},
                 "filters": [[1, 4], [2, 8], [3, 16], [4, 32]],
                 "max_characters_per_token": 50, "n_characters": 262, "n_highway": 2},
    "lstm": {"cell_clip": 3, "dim": 48, "n_layers": 2, "proj_clip": 3, "projection_dim": 16,
             "use_skip_connections": True},
    "dropout": 0.1, "n_tokens_vocab": 100,
}


def oracle_python(name: str) -> str:
    """The oracle venv's python, or skip (fail under ELMO_REQUIRE_ORACLES=1) saying why."""
    env, folder, what = VENVS[name]
    python = Path(os.environ.get(env) or REPO / folder / "bin" / "python")
    if not python.is_file():
        reason = (f"{what} oracle venv not found at {python}: `bash .ci/oracles.sh` builds it "
                  f"(or set {env})")
        if os.environ.get("ELMO_REQUIRE_ORACLES", "") not in ("", "0"):
            pytest.fail(f"{reason}; ELMO_REQUIRE_ORACLES is set", pytrace=False)
        pytest.skip(reason)
    return str(python)


def run(python: str, *args: object) -> None:
    """Run an oracle script; its stderr in the failure message."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(REPO / "runtime"), str(REPO / "export")])}
    result = subprocess.run([python, *map(str, args)], capture_output=True, text=True, env=env,
                            timeout=1800)
    assert result.returncode == 0, f"{args[0]} failed:\n{result.stderr[-3000:]}"


def write_model(directory: Path, options: dict, seed: int, weights_name: str) -> Path:
    """options.json + random bilm-tf weights (seeded) in ``directory``."""
    from elmo_export.bilm_tf.weights import write_weights
    from elmo_runtime.format.options import parse_options
    from support.bilm_random import random_weights

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "options.json").write_text(json.dumps(options))
    parsed = parse_options(options)
    write_weights(directory / weights_name, random_weights(parsed, seed=seed), parsed)
    return directory


def random_words(rng: np.random.Generator, n: int) -> list[str]:
    alphabet = list("abcdefghijklmnopqrstuvwxyzABCDEFG0123456789.,-'éßжъ中文")
    vocab = ["".join(rng.choice(alphabet, size=rng.integers(1, 12))) for _ in range(60)]
    vocab += ["<S>", "</S>", "a" * 70]  # boundary tokens as text; a token past 50 chars
    return [str(w) for w in rng.choice(vocab, size=n)]


def compare_npz(ours: Path, theirs: Path) -> int:
    """Assert equal keys, shapes and dtypes, values to ATOL; the number of arrays."""
    with np.load(ours) as a, np.load(theirs) as b:
        assert sorted(a.files) == sorted(b.files)
        for key in b.files:
            assert a[key].shape == b[key].shape, key
            assert a[key].dtype == b[key].dtype, (key, a[key].dtype, b[key].dtype)
            np.testing.assert_allclose(a[key], b[key], rtol=0, atol=ATOL, err_msg=key)
        return len(b.files)


def compare_hdf5(ours: Path, theirs: Path) -> None:
    """Same datasets (a sentence key with "/" makes groups, in both), equal to ATOL."""
    import h5py

    def datasets(f: h5py.File) -> dict[str, h5py.Dataset]:
        found: dict[str, h5py.Dataset] = {}
        f.visititems(lambda name, obj: found.update(
            {name: obj} if isinstance(obj, h5py.Dataset) else {}))
        return found

    with h5py.File(ours, "r") as fa, h5py.File(theirs, "r") as fb:
        a, b = datasets(fa), datasets(fb)
        assert sorted(a) == sorted(b)
        for key in b:
            assert a[key].shape == b[key].shape and a[key].dtype == b[key].dtype, key
            if key == "sentence_to_index":
                assert json.loads(a[key][0]) == json.loads(b[key][0])
                continue
            np.testing.assert_allclose(a[key][...], b[key][...], rtol=0, atol=ATOL,
                                       err_msg=key)


def allennlp_calls(tmp: Path, rng: np.random.Generator, tag: str) -> list[dict]:
    """A stateful call sequence touching every method (the embed_file calls write into
    ``tmp/<tag>-<impl>-<k>.hdf5``; the impl part is filled in per run)."""
    def sent(n: int) -> list[str]:
        return random_words(rng, n)
    lines = [" ".join(sent(int(n))) for n in rng.integers(1, 30, size=11)]
    # a repeated line: sentence_to_index keeps the last; "keys.txt" without it for
    # use_sentence_keys (a repeat is an error there, tested in test_allennlp.py)
    (tmp / "input.txt").write_text("\n".join(lines + [lines[2]]) + "\n", encoding="utf-8")
    (tmp / "keys.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    calls: list[dict] = [
        {"sentence": sent(13)},
        {"batch": [sent(40), sent(7), sent(25)]},
        {"sentence": sent(30)},
        {"batch": [sent(12), sent(3), sent(50), sent(9), sent(20)]},
        {"batch": [[]]},
        {"batch": [sent(4), [], sent(6)]},
        {"sentence": sent(18)},
        {"sentences": [sent(int(n)) for n in rng.integers(1, 20, size=9)], "batch_size": 4},
        {"to_embeddings": [sent(5), sent(11)]},
    ]
    files = [("all", False, False), ("top", False, False), ("average", True, False),
             ("top", False, True)]
    for k, (fmt, forget, keys) in enumerate(files):
        calls.append({"input": str(tmp / ("keys.txt" if keys else "input.txt")),
                      "out": f"{tag}-IMPL-{k}.hdf5",
                      "output_format": fmt, "batch_size": 3, "forget_sentences": forget,
                      "use_sentence_keys": keys and not forget})
    calls.append({"sentence": sent(8)})
    return calls


def run_both_allennlp(tmp: Path, model: Path, weights: str, calls: list[dict]) -> int:
    """The call sequence under AllenNLP 0.9 and the drop-in; everything compared."""
    oracle = oracle_python("allennlp")
    outputs = {}
    for impl, python in (("allennlp", oracle), ("elmo-edge", sys.executable)):
        spec = {"options": str(model / "options.json"), "weights": str(model / weights),
                "calls": [{**c, "out": str(tmp / c["out"].replace("IMPL", impl))}
                          if "out" in c else c for c in calls]}
        (tmp / f"{impl}.json").write_text(json.dumps(spec))
        run(python, SCRIPTS / "allennlp_calls.py", impl, tmp / f"{impl}.json",
            tmp / f"{impl}.npz")
        outputs[impl] = spec
    n = compare_npz(tmp / "elmo-edge.npz", tmp / "allennlp.npz")
    for ours, theirs in zip(outputs["elmo-edge"]["calls"], outputs["allennlp"]["calls"],
                            strict=True):
        if "out" in ours:
            compare_hdf5(Path(ours["out"]), Path(theirs["out"]))
    return n


def test_allennlp_small_model_stateful_sequence(tmp_path: Path) -> None:
    model = write_model(tmp_path / "model", SMALL_OPTIONS, seed=3, weights_name="weights.hdf5")
    calls = allennlp_calls(tmp_path, np.random.default_rng(0), "small")
    assert run_both_allennlp(tmp_path, model, "weights.hdf5", calls) == 27


def test_allennlp_original_shape_and_seqvec_snippet(tmp_path: Path) -> None:
    """SeqVec's options (the original ELMo's shapes) with random weights: SeqVec's README
    snippet gives AllenNLP's numbers, and so does a stateful call sequence."""
    oracle = oracle_python("allennlp")
    model = write_model(tmp_path / "uniref50_v2", SEQVEC_OPTIONS, seed=5,
                        weights_name="weights.hdf5")
    rng = np.random.default_rng(1)
    residues = np.array(list("ACDEFGHIKLMNPQRSTVWYXU"))
    proteins = ["".join(rng.choice(residues, size=n)) for n in (13, 60, 35, 120, 7)]
    (tmp_path / "seqs.json").write_text(json.dumps(proteins))
    for impl, python in (("allennlp", oracle), ("elmo-edge", sys.executable)):
        run(python, SCRIPTS / "seqvec_snippet.py", impl, model, tmp_path / "seqs.json",
            tmp_path / f"seqvec-{impl}.npz")
    assert compare_npz(tmp_path / "seqvec-elmo-edge.npz", tmp_path / "seqvec-allennlp.npz") == 15
    with np.load(tmp_path / "seqvec-elmo-edge.npz") as ours:
        assert ours["e3"].shape == (3, 120, 1024) and ours["p3"].shape == (1024,)
    calls = [{"sentence": list(proteins[0])},
             {"batch": [list(p) for p in proteins[1:4]]},
             {"sentences": [list(p) for p in proteins], "batch_size": 2},
             {"input": str(tmp_path / "seqs.txt"), "out": "orig-IMPL-0.hdf5",
              "output_format": "average", "batch_size": 2, "forget_sentences": False,
              "use_sentence_keys": False},
             {"sentence": list(proteins[4])}]
    (tmp_path / "seqs.txt").write_text("\n".join(" ".join(p) for p in proteins) + "\n")
    run_both_allennlp(tmp_path, model, "weights.hdf5", calls)


def nlpl_zip(directory: Path, zip_path: Path) -> Path:
    """An NLPL-style download: options.json, model.hdf5 and vocab.txt at the ZIP's root."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(directory / "options.json", "options.json")
        zf.write(directory / "model.hdf5", "model.hdf5")
        zf.writestr("vocab.txt", "<S>\n</S>\n<UNK>\nthe\nof\n")
    return zip_path


@pytest.mark.parametrize("batch_size", [4, 32])
def test_simple_elmo_every_layers_and_method(tmp_path: Path, batch_size: int) -> None:
    """Both methods, every ``layers``, with and without warm-up, from an NLPL ZIP."""
    oracle = oracle_python("simple_elmo")
    model = write_model(tmp_path / "m", SMALL_OPTIONS, seed=7, weights_name="model.hdf5")
    archive = nlpl_zip(model, tmp_path / "210.zip")
    rng = np.random.default_rng(2)
    texts = [random_words(rng, int(n)) for n in rng.integers(1, 25, size=11)]
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    for impl, python in (("simple_elmo", oracle), ("elmo-edge", sys.executable)):
        run(python, SCRIPTS / "simple_elmo_calls.py", impl, archive, tmp_path / "texts.json",
            tmp_path / f"{impl}.npz", batch_size)
    with np.load(tmp_path / "elmo-edge.npz") as ours, \
            np.load(tmp_path / "simple_elmo.npz") as theirs:
        assert sorted(ours.files) == sorted(theirs.files) and len(ours.files) == 12
        for key in theirs.files:
            assert ours[key].shape == theirs[key].shape and ours[key].dtype == np.float64, key
            if key.startswith("a_") and key.endswith("_all"):
                continue  # a deliberate difference: checked below
            np.testing.assert_allclose(ours[key], theirs[key], rtol=0, atol=ATOL, err_msg=key)
        for warmup in (0, 1):
            key = f"{batch_size}_{warmup}_all"
            expected = per_layer_average(theirs[f"v_{key}"], texts, batch_size)
            np.testing.assert_allclose(ours[f"a_{key}"], expected, rtol=0, atol=ATOL)
            assert np.abs(theirs[f"a_{key}"] - expected).max() > 1e-2  # theirs is scrambled
        # padding rows inside a batch are not zero for "average" (simple_elmo's own output)
        shortest = int(np.argmin([len(t) for t in texts[:batch_size]]))
        pad = theirs[f"v_{batch_size}_0_average"][shortest, len(texts[shortest]):]
        assert np.abs(pad).max() > 0


def per_layer_average(all_layers: np.ndarray, texts: list, batch_size: int) -> np.ndarray:
    """What get_elmo_vector_average(layers="all") should be: each layer's mean over the
    chunk's padded length, one unit vector per layer (from get_elmo_vectors' output)."""
    out = np.zeros(all_layers.shape[:2] + all_layers.shape[3:])
    for start in range(0, len(texts), batch_size):
        steps = max(len(t) for t in texts[start:start + batch_size])
        mean = all_layers[start:start + batch_size, :, :steps].mean(axis=2)
        out[start:start + batch_size] = mean / np.linalg.norm(mean, axis=-1, keepdims=True)
    return out
