"""Training: the tiny preset learns, resumes exactly, runs data-parallel, exports, fails clearly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("h5py")

from click.testing import CliRunner  # noqa: E402
from elmo_export.bilm_tf.weights import read_weights  # noqa: E402
from elmo_export.presets import load_preset, preset_names, resolve_options  # noqa: E402
from elmo_export.train.checkpoint import (  # noqa: E402
    CheckpointError,
    export_checkpoint,
    load_bilm,
    load_checkpoint,
    rng_state,
    set_rng_state,
)
from elmo_export.train.data import Vocab  # noqa: E402
from elmo_export.train.lm import evaluate, unigram_perplexity  # noqa: E402
from elmo_export.train.loop import (  # noqa: E402
    EXPLODE_FACTOR,
    TrainConfig,
    TrainingDiverged,
    divergence,
    train,
)
from elmo_runtime.cli import main  # noqa: E402
from elmo_runtime.errors import ElmoError, OptionsError  # noqa: E402
from elmo_runtime.format import contract  # noqa: E402
from elmo_runtime.format.chars import pack  # noqa: E402
from elmo_runtime.format.options import load_options  # noqa: E402
from support.cli import run_elmo  # noqa: E402
from support.errors import one_line_error  # noqa: E402
from support.processes import default_signals  # noqa: E402

SENTENCES = [["neural", "networks", "are", "models", "."], ["a", "net"], []]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, bilm_fixtures: Path) -> dict[str, Path]:
    """bilm-tf's train_data.txt split: 4 lines to train on, the last one held out."""
    src = bilm_fixtures
    if not (src / "train_data.txt").is_file():
        pytest.skip(f"train_data.txt not found in {src} (set ELMO_FIXTURES)")
    lines = (src / "train_data.txt").read_text(encoding="utf-8").strip().splitlines()
    d = tmp_path_factory.mktemp("data")
    (d / "train.txt").write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
    (d / "heldout.txt").write_text(lines[-1] + "\n", encoding="utf-8")
    return {"train": d / "train.txt", "heldout": d / "heldout.txt",
            "vocab": src / "train_vocab.txt"}


def config(data: dict[str, Path], out: Path, **kw) -> TrainConfig:
    """The tiny preset on the fixture corpus, single-threaded, quiet."""
    defaults = dict(corpus=(str(data["train"]),), output_dir=str(out), options=load_preset("tiny"),
                    batch_size=4, unroll=10, threads=1, progress=False, eval_every=1000,
                    checkpoint_every=1000)
    return TrainConfig(**{**defaults, **kw})


def records(out: Path, key: str) -> dict[int, float]:
    with open(out / "metrics.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return {r["step"]: r[key] for r in rows if key in r}


@pytest.fixture(scope="module")
def trained(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    train(config(data, out, vocab_file=str(data["vocab"]), steps=80,
                 eval_file=str(data["heldout"])))
    return out


def test_presets_are_the_published_sizes() -> None:
    assert {"tiny", "small", "medium", "original"} <= set(preset_names())
    sizes = {name: load_preset(name).n_parameters() for name in ("small", "medium", "original")}
    assert sizes == {"small": 13_593_296, "medium": 28_027_728, "original": 93_600_848}
    assert load_preset("original").n_highway == 2 and load_preset("small").n_characters == 262
    with pytest.raises(OptionsError, match="unknown preset 'huge'; available: .*medium.*tiny"):
        resolve_options("huge")


def test_tiny_model_learns(trained: Path, data: dict[str, Path]) -> None:
    ppl = records(trained, "heldout_perplexity")
    assert sorted(ppl) == [0, 80]
    assert ppl[80] < 0.6 * ppl[0], ppl
    loss = records(trained, "train_loss")
    assert loss[80] < loss[10]
    model, ckpt = load_bilm(trained)
    assert ckpt["step"] == 80 and len(ckpt["vocab"]) == 32
    assert (trained / "vocab.txt").read_text().split() == ckpt["vocab"].tokens


def test_evaluate_is_the_logged_perplexity(trained: Path, data: dict[str, Path]) -> None:
    from elmo_export.train.lm import LanguageModel

    ckpt = load_checkpoint(trained)
    lm = LanguageModel(ckpt["options"], ckpt["vocab"])
    lm.load_state_dict(ckpt["model"])
    ppl = evaluate(lm, data["heldout"], batch_size=4, unroll=10)
    assert ppl == pytest.approx(records(trained, "heldout_perplexity")[80], rel=1e-6)


def test_unigram_baseline(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("a a b\n\n")
    (tmp_path / "heldout.txt").write_text("a c\n")
    vocab = Vocab(["<S>", "</S>", "<UNK>", "a", "b"])
    # add-one counts <S> 1, </S> 2, <UNK> 1, a 3, b 2; predicted: a, <UNK>, </S>
    expected = (9 / 3 * 9 / 1 * 9 / 2) ** (1 / 3)
    ppl = unigram_perplexity([tmp_path / "train.txt"], tmp_path / "heldout.txt", vocab)
    assert ppl == pytest.approx(expected)


def test_rng_states_restore_from_a_stack_of_ranks() -> None:
    import random

    states = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        random.gauss(0, 1)  # leaves a cached Gaussian in Python's state
        states.append(rng_state())
        expected = (torch.rand(3), random.random(), np.random.rand())
    stacked = {k: torch.stack([s[k] for s in states]) for k in states[0]}
    set_rng_state({k: v[1] for k, v in stacked.items()})  # views at a non-zero offset
    assert torch.equal(torch.rand(3), expected[0])
    assert (random.random(), np.random.rand()) == expected[1:]


def test_resume_gives_the_uninterrupted_run(data: dict[str, Path], tmp_path: Path) -> None:
    # a built vocabulary (74 words) and 16 samples: the sampled softmax and dropout use the RNG
    kw = dict(log_every=1, n_samples=16, dropout=0.2)
    whole = config(data, tmp_path / "whole", steps=12, **kw)
    train(whole)
    half = config(data, tmp_path / "half", steps=6, **kw)
    train(half)
    resumed = train(replace(half, steps=12, resume=True))
    a, b = records(tmp_path / "whole", "train_loss"), records(tmp_path / "half", "train_loss")
    assert list(b) == list(range(1, 13))
    assert [b[s] for s in range(7, 13)] == [a[s] for s in range(7, 13)]
    expected = load_checkpoint(tmp_path / "whole")["model"]
    for name, value in resumed.state_dict().items():
        assert torch.equal(value, expected[name]), name


def test_resume_refuses_other_settings(data: dict[str, Path], tmp_path: Path) -> None:
    base = config(data, tmp_path, steps=2)
    train(base)
    with pytest.raises(ElmoError, match="already holds a checkpoint; pass --resume"):
        train(base)
    small = load_preset("tiny")
    other = replace(small, lstm_dim=32)
    with pytest.raises(CheckpointError, match=r"trained with other options \(lstm_dim: 64 vs 32\)"):
        train(replace(base, options=other, steps=4, resume=True))
    with pytest.raises(CheckpointError, match="cannot resume with batch_size 3"):
        train(replace(base, batch_size=3, steps=4, resume=True))
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        train(replace(base, output_dir=str(tmp_path / "new"), resume=True))
    with pytest.raises(ElmoError, match="checkpoint is at step 2 and this run asks for 2 steps"):
        train(replace(base, resume=True))


@pytest.mark.slow
def test_two_processes_end_with_equal_weights(data: dict[str, Path], tmp_path: Path) -> None:
    script = tmp_path / "ddp.py"
    script.write_text(
        "import os, sys, torch\n"
        "from elmo_export.presets import load_preset\n"
        "from elmo_export.train.loop import TrainConfig, train\n"
        "out = sys.argv[1]\n"
        "model = train(TrainConfig(corpus=(sys.argv[2],), output_dir=out, steps=5,\n"
        "    options=load_preset('tiny'), batch_size=2, unroll=5, n_samples=16, progress=False))\n"
        "torch.save(model.state_dict(), f\"{out}/rank{os.environ['RANK']}.pt\")\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(script), str(out), str(data["train"])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name, value in ranks[0].items():
        assert torch.equal(value, ranks[1][name]), name
    ckpt = load_checkpoint(out)
    assert ckpt["world"] == 2 and ckpt["step"] == 5
    data_pos = ckpt["ranks"]["data"]
    assert data_pos.shape[0] == 2 and not torch.equal(data_pos[0], data_pos[1])


def test_export_onnx_matches_pytorch(trained: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    path = tmp_path / "model.onnx"
    diff = export_checkpoint(trained, path, "onnx")
    assert diff is not None and diff <= 1e-5
    model, _ = load_bilm(trained)
    feed = pack(SENTENCES, model.options.max_characters_per_token).feed()
    with torch.no_grad():
        expected = model.run_feed(feed)[contract.OUTPUT_LAYERS].numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([contract.OUTPUT_LAYERS], feed)[0]
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    source = json.loads(session.get_modelmeta().custom_metadata_map[contract.KEY_SOURCE])
    assert source["kind"] == "elmo-edge-train" and source["step"] == 80


def test_export_hdf5_round_trips(trained: Path, tmp_path: Path) -> None:
    from elmo_export.graph.convert import convert_bilm_tf

    out = tmp_path / "elmo"
    result = CliRunner().invoke(main, ["export", str(trained), "--format", "hdf5", "-o", str(out)])
    assert result.exit_code == 0, result.output
    options = load_options(out / "options.json")
    assert json.loads((out / "options.json").read_text())["char_cnn"]["n_characters"] == 262
    model, ckpt = load_bilm(trained)
    weights = read_weights(out / "weights.hdf5", options)
    for name, value in model.elmo_weights().items():
        np.testing.assert_array_equal(weights[name], value, err_msg=name)
    assert (out / "vocab.txt").read_text().split() == ckpt["vocab"].tokens
    # `elmo convert` of the export gives the checkpoint's vectors
    convert_bilm_tf(out / "options.json", out / "weights.hdf5", tmp_path / "converted.onnx")
    import onnxruntime as ort

    feed = pack(SENTENCES, options.max_characters_per_token).feed()
    session = ort.InferenceSession(str(tmp_path / "converted.onnx"),
                                   providers=["CPUExecutionProvider"])
    got = session.run([contract.OUTPUT_LAYERS], feed)[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model.run_feed(feed)[contract.OUTPUT_LAYERS].numpy(),
                                   atol=1e-5)


def _cli_error(args: list[str]) -> str:
    return one_line_error(run_elmo(*args))


def test_bad_input_is_one_clear_line(data: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n \n\n")
    novocab = tmp_path / "vocab.txt"
    novocab.write_text("the\nof\n")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    train_args = [str(data["train"]), "--options", "tiny", "--steps", "1", "-q"]
    out = ["-o", str(tmp_path / "out")]
    assert "empty corpus" in _cli_error(["train", str(empty), *out, "--options", "tiny"])
    assert "only blank lines" in _cli_error(["train", str(blank), *out, "--options", "tiny"])
    assert "special tokens <S>, </S>, <UNK> are missing" in _cli_error(
        ["train", *train_args, *out, "--vocab", str(novocab)])
    assert "unknown preset 'large'; available: " in _cli_error(
        ["train", str(data["train"]), *out, "--options", "large"])
    assert "cannot write to the output directory" in _cli_error(
        ["train", *train_args, "-o", str(a_file / "sub")])
    assert "not a readable elmo-edge checkpoint" in _cli_error(
        ["export", str(a_file), "-o", str(tmp_path / "m.onnx")])


def test_resume_from_the_cli_checks_options(data: dict[str, Path], tmp_path: Path) -> None:
    out = str(tmp_path / "run")
    args = ["train", str(data["train"]), "-o", out, "--steps", "2", "--batch-size", "2",
            "--unroll", "4", "--threads", "1", "-q"]
    result = CliRunner().invoke(main, [*args, "--options", "tiny"])
    assert result.exit_code == 0, result.output
    options = tmp_path / "other.json"
    other = load_preset("tiny").to_dict()
    other["lstm"]["projection_dim"] = 8
    options.write_text(json.dumps(other))
    assert "trained with other options (projection_dim: 16 vs 8)" in _cli_error(
        [*args, "--resume", "--options", str(options)])
    # without --options and --batch-size the checkpoint's settings are used
    result = CliRunner().invoke(main, ["train", str(data["train"]), "-o", out, "--resume",
                                       "--steps", "3", "-q"])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out)["step"] == 3


def test_init_from_fine_tunes_the_trained_weights(trained: Path, data: dict[str, Path],
                                                  tmp_path: Path) -> None:
    out = tmp_path / "tuned"
    args = ["train", str(data["heldout"]), "-o", str(out), "--init-from", str(trained),
            "--steps", "2", "--batch-size", "2", "--unroll", "4", "--threads", "1", "-q",
            "--eval-file", str(data["heldout"])]
    result = CliRunner().invoke(main, args)  # no --options: the checkpoint's (tiny), not small
    assert result.exit_code == 0, result.output
    start = records(out, "heldout_perplexity")[0]
    assert start == pytest.approx(records(trained, "heldout_perplexity")[80], rel=1e-6)
    tuned, base = load_checkpoint(out), load_checkpoint(trained)
    assert tuned["step"] == 2 and tuned["vocab"].tokens == base["vocab"].tokens
    assert tuned["config"]["init_from"] == str(trained)
    assert (out / "vocab.txt").read_text().split() == base["vocab"].tokens
    usage = CliRunner().invoke(main, [*args[:-2], "--vocab", str(data["vocab"])])
    assert usage.exit_code == 2 and "without --resume, --vocab and --vocab-size" in usage.output
    assert "fine-tune with the checkpoint's options" in _cli_error(
        [*args, "-o", str(tmp_path / "other"), "--options", "small"])
    assert "no such checkpoint" in _cli_error(
        ["train", str(data["heldout"]), "-o", str(tmp_path / "x"), "--init-from",
         str(tmp_path / "none"), "-q"])


@pytest.mark.slow
def test_ctrl_c_saves_a_resumable_checkpoint(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-c", "from elmo_runtime.cli import main; main()", "train",
           str(data["train"]), "-o", str(out), "--options", "tiny", "--steps", "100000",
           "--batch-size", "2", "--unroll", "4", "--threads", "1", "--log-every", "1", "-q"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, preexec_fn=default_signals)
    try:
        metrics = out / "metrics.jsonl"
        deadline = time.monotonic() + 60
        while not (metrics.exists() and metrics.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "--resume" in err
    ckpt = load_checkpoint(out)
    step = ckpt["step"]
    assert step >= 1 and max(records(out, "train_loss")) == step
    saved = ckpt["config"]
    train(TrainConfig(corpus=(str(data["train"]),), output_dir=str(out), options=ckpt["options"],
                      steps=step + 2, batch_size=saved["batch_size"], unroll=saved["unroll"],
                      threads=1, progress=False, resume=True))
    assert load_checkpoint(out)["step"] == step + 2


# ---------------------------------------------------------------------------- issue 17


def test_a_vocabulary_with_a_bom_or_counts_trains(data: dict[str, Path], tmp_path: Path) -> None:
    tokens = data["vocab"].read_text(encoding="utf-8").split()
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + data["vocab"].read_bytes())
    train(config(data, tmp_path / "bom", vocab_file=str(bom), steps=1))
    assert load_checkpoint(tmp_path / "bom")["vocab"].tokens == tokens
    counted = tmp_path / "counts.txt"
    counted.write_text("".join(f"{t} {100 - i}\n" for i, t in enumerate(tokens)), encoding="utf-8")
    train(config(data, tmp_path / "counts", vocab_file=str(counted), steps=1))
    assert load_checkpoint(tmp_path / "counts")["vocab"].tokens == tokens
    spaced = tmp_path / "spaced.txt"
    spaced.write_text("<S>\n</S>\n<UNK>\nNew York\n", encoding="utf-8")
    message = _cli_error(["train", str(data["train"]), "-o", str(tmp_path / "x"), "--options",
                          "tiny", "--vocab", str(spaced), "-q"])
    assert f"{spaced}:4: 'New York' is not a token" in message


def test_clip_norm_zero_means_no_clipping(data: dict[str, Path], tmp_path: Path) -> None:
    # the initial weights (seeded by the config), one step at a learning rate of 1e-12 later
    start = {k: v.clone() for k, v in train(config(data, tmp_path / "s", steps=1, lr=1e-12,
                                                   clip_norm=0)).state_dict().items()}
    runs = {clip: train(config(data, tmp_path / str(clip), steps=3, clip_norm=clip)).state_dict()
            for clip in (0.0, 1e30)}
    for name, value in runs[0.0].items():
        assert torch.equal(value, runs[1e30][name]), name
    moved = [n for n, v in runs[0.0].items() if not torch.allclose(v, start[n], atol=1e-6)]
    assert len(moved) > len(start) // 2, moved
    result = CliRunner().invoke(main, ["train", "--help"])
    assert "0 turns clipping off" in " ".join(result.output.split())
    with pytest.raises(ElmoError, match="clip_norm must be positive, or 0 for no clipping"):
        config(data, tmp_path, clip_norm=-1.0)


def test_divergence_rules() -> None:
    assert divergence(4.4, 82) is None
    assert "the loss is nan" in divergence(float("nan"), 82)
    assert "the loss is inf" in divergence(float("inf"), 82)
    limit = EXPLODE_FACTOR * np.log(82)
    assert divergence(limit - 1e-6, 82) is None
    assert f"exceeds {limit:.3g}" in divergence(3.6e7, 82)


def test_a_diverging_run_stops_and_keeps_the_last_checkpoint(data: dict[str, Path],
                                                             tmp_path: Path) -> None:
    out = tmp_path / "run"
    good = config(data, out, steps=2, checkpoint_every=1, log_every=1)
    train(good)
    assert not (out / "checkpoint.next.pt").exists()  # step 1's was confirmed, then replaced
    saved = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(TrainingDiverged, match=r"diverged at step (\d+): .*still holds step 2"):
        train(replace(good, steps=40, lr=1e6, resume=True))
    assert (out / "checkpoint.pt").read_bytes() == saved  # not the pending one of step 3
    assert not (out / "checkpoint.next.pt").exists()
    diverged = records(out, "diverged")
    assert len(diverged) == 1 and min(diverged) > 2
    message = _cli_error(["train", str(data["train"]), "-o", str(tmp_path / "cli"), "--options",
                          "tiny", "--lr", "1e6", "--steps", "40", "--batch-size", "4",
                          "--unroll", "10", "--threads", "1", "-q"])
    step = int(message.split("diverged at step ")[1].split(":")[0])
    assert step == min(records(tmp_path / "cli", "diverged"))
    assert "no checkpoint was written" in message
    assert not (tmp_path / "cli" / "checkpoint.pt").exists()


def test_export_records_the_hash_of_the_loaded_bytes(trained: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint replaced by training between load and hash must not be what is recorded."""
    import hashlib

    import onnxruntime as ort
    from elmo_export.train import checkpoint

    loaded = (trained / "checkpoint.pt").read_bytes()
    copy = tmp_path / "checkpoint.pt"
    copy.write_bytes(loaded)
    real = checkpoint.load_checkpoint

    def load_then_replace(path):  # training saves a later step right after the load
        ckpt = real(path)
        copy.write_bytes(loaded + b"a later step")
        return ckpt

    monkeypatch.setattr(checkpoint, "load_checkpoint", load_then_replace)
    export_checkpoint(copy, tmp_path / "m.onnx", "onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    source = json.loads(session.get_modelmeta().custom_metadata_map[contract.KEY_SOURCE])
    assert source["checkpoint_sha256"] == hashlib.sha256(loaded).hexdigest()


def test_the_final_line_shows_the_last_perplexity(data: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    run = config(data, out, steps=3, progress=True, eval_file=str(data["heldout"]))
    train(run)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    ppl = records(out, "heldout_perplexity")
    assert sorted(ppl) == [0, 3]
    assert last.startswith("step 3/3") and last.endswith(f"held-out ppl {ppl[3]:.1f}"), last
    train(replace(run, steps=5, resume=True))
    last = capsys.readouterr().err.strip().splitlines()[-1]
    ppl = records(out, "heldout_perplexity")
    assert sorted(ppl) == [0, 3, 5]
    assert last.startswith("step 5/5") and last.endswith(f"held-out ppl {ppl[5]:.1f}"), last


@pytest.mark.slow
def test_torchrun_prints_the_closing_message_once(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "elmo_runtime.cli", "train", str(data["train"]), "-o", str(out), "--options",
           "tiny", "--steps", "3", "--batch-size", "2", "--unroll", "4", "--threads", "1", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("done; checkpoint and metrics in") == 1, proc.stderr[-3000:]
    assert load_checkpoint(out)["world"] == 2


def test_a_new_run_never_replaces_files_in_its_directory(data: dict[str, Path],
                                                         tmp_path: Path) -> None:
    """Issue 24 item 3: `elmo train -o DIR` overwrote an options.json already in DIR, and
    `--vocab DIR/vocab.txt -o DIR` rewrote the input vocabulary."""
    out = tmp_path / "published"
    out.mkdir()
    (out / "options.json").write_text('{"theirs": true}\n', encoding="utf-8")
    args = ["train", str(data["train"]), "-o", str(out), "--options", "tiny", "--steps", "1",
            "--batch-size", "2", "--unroll", "4", "--threads", "1", "-q"]
    one_line_error(run_elmo(*args),
                   f"{out / 'options.json'}: exists; pass --overwrite to replace it")
    assert (out / "options.json").read_text() == '{"theirs": true}\n'
    assert sorted(p.name for p in out.iterdir()) == ["options.json"]  # nothing else written

    mine = tmp_path / "mine"
    mine.mkdir()
    vocab = mine / "vocab.txt"
    vocab.write_bytes(b"\xef\xbb\xbf" + data["vocab"].read_bytes().replace(b"\n", b" 7\n"))
    before = vocab.read_bytes()  # a BOM and counts: Vocab.write would drop both
    result = run_elmo("train", str(data["train"]), "-o", str(mine), "--vocab", str(vocab),
                      *args[4:])
    assert result.exit_code == 0, result.output
    assert vocab.read_bytes() == before  # the input vocabulary is the run's: kept as it is
    assert (mine / "checkpoint.pt").is_file()

    result = run_elmo(*args, "--overwrite")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "options.json").read_text())["lstm"]


def test_export_never_replaces_a_file_without_overwrite(trained: Path, tmp_path: Path) -> None:
    """Issue 24 item 3: `elmo export -o FILE` and `--format hdf5 -o DIR` replaced files."""
    onnx_out = tmp_path / "m.onnx"
    onnx_out.write_bytes(b"mine")
    one_line_error(run_elmo("export", trained, "-o", onnx_out),
                   f"{onnx_out}: exists; pass --overwrite to replace it")
    assert onnx_out.read_bytes() == b"mine"
    out = tmp_path / "elmo"
    out.mkdir()
    (out / "vocab.txt").write_text("theirs\n", encoding="utf-8")
    one_line_error(run_elmo("export", trained, "--format", "hdf5", "-o", out),
                   f"{out / 'vocab.txt'}: exists; pass --overwrite to replace it")
    assert sorted(p.name for p in out.iterdir()) == ["vocab.txt"]
    result = run_elmo("export", trained, "--format", "hdf5", "-o", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert (out / "vocab.txt").read_text() != "theirs\n"
