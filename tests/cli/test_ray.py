"""`elmo embed --engine ray` and the Ray Data API: same vectors as one process, clean errors."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from elmo_runtime.cli import main
from elmo_runtime.corpus import read_sentences
from elmo_runtime.embedder import Embedder
from elmo_runtime.errors import ElmoError
from elmo_runtime.output.ray_engine import RAY_HINT, split_lines
from elmo_runtime.output.shards import MANIFEST, read_manifest
from elmo_runtime.settings import EmbedderSettings
from support.cli import elmo_command
from support.requires import requires


def run(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def corpus(n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(300)] + ["The", "cat", "sat", ".", "é"]
    lines = [" ".join(rng.choice(words, size=rng.integers(0, 15))) for _ in range(n)]
    return "".join(line + "\n" for line in lines)


def single_process(path: Path, model: Path) -> list[np.ndarray]:
    with open(path, "rb") as f:
        sentences = list(read_sentences(f, str(path)))
    return list(Embedder(model, provider="cpu", threads=1).embed_sentences(sentences))


# ---------------------------------------------------------------- without Ray


def test_missing_ray_gives_the_install_hint(
    tmp_path: Path, toy_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    src = tmp_path / "in.txt"
    src.write_text("a b\n")
    result = run("embed", src, tmp_path / "out", "--engine", "ray", "-m", toy_model_path)
    assert result.exit_code == 1
    assert result.stderr == f"Error: {RAY_HINT}\n"
    assert RAY_HINT == "the ray engine needs Ray: pip install 'elmo-edge[ray]'"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]
    from elmo_runtime.output.ray_engine import embed_dataset

    with pytest.raises(ElmoError, match=r"pip install 'elmo-edge\[ray\]'"):
        embed_dataset(None, toy_model_path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "hdf5"], "--engine ray writes Parquet"),
        (["--stateful"], "--stateful needs the local engine"),
        (["--shard-size", "10"], "--shard-size is for the local engine"),
    ],
)
def test_options_the_ray_engine_refuses(tmp_path: Path, args: list[str], message: str) -> None:
    src = tmp_path / "in.txt"
    src.write_text("a\n")
    result = run("embed", src, tmp_path / "out", "--engine", "ray", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    result = run("embed", "-", tmp_path / "out", "--engine", "ray")
    assert "--engine ray reads files, not stdin" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("block_size", [1, 2, 3, 7, 1 << 20])
def test_split_lines_matches_the_local_reader(block_size: int) -> None:
    data = ("\ufeffα b\r\n\nx\x0by\u2028z\x1c \x85w\n" + "long " * 50 + "\nlast").encode()
    lines = list(split_lines(io.BytesIO(data).read, block_size))
    from elmo_runtime.corpus import decode_line

    ray_side = [decode_line(line, "x", i, "strict").split() for i, line in enumerate(lines, 1)]
    assert ray_side == list(read_sentences(io.BytesIO(data), "x"))
    assert len(lines) == 5  # only "\n" ends a line, as in the local engine
    for empty in (b"", b"\n", b"\n\n"):
        assert list(split_lines(io.BytesIO(empty).read, block_size)) == [b""] * empty.count(b"\n")


# ---------------------------------------------------------------- a local Ray


@requires("ray")
@pytest.mark.slow
def test_ray_cli_equals_one_process(tiny_model_path: Path, tmp_path: Path) -> None:
    """2 actors on a private local Ray; no ~/.ray/auth_token, no /tmp/ray, nothing left."""
    pytest.importorskip("pyarrow")
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from elmo_runtime.output.arrow import arrays_from_table

    inputs = [tmp_path / "a.txt", tmp_path / "b.txt"]
    inputs[0].write_text(corpus(2500, seed=1))
    inputs[1].write_text(corpus(500, seed=2))
    home = tmp_path / "home"
    home.mkdir()
    tmp = Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))  # short: Ray's socket paths
    out = tmp_path / "out"
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp)}
    args = [*elmo_command(), "embed", *map(str, inputs), str(out), "--model", str(tiny_model_path)]
    args += ["--engine", "ray", "--actors", "2", "--threads", "1", "--provider", "cpu"]
    try:
        proc = subprocess.run(args, capture_output=True, env=env, timeout=600)
    finally:
        leftovers = list(tmp.iterdir())
        shutil.rmtree(tmp)
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr
    assert f"wrote 3000 sentences in {len(read_manifest(out)['shards'])} " in stderr
    assert "Traceback" not in stderr and "auth" not in stderr.lower()
    # one line: no ERROR-level log of Ray's core worker (actor restarts), no deprecation
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert not (home / ".ray").exists()  # no ~/.ray/auth_token
    assert [p.name for p in leftovers if "ray" in p.name] == []  # Ray's temp dir is gone
    manifest = read_manifest(out)
    assert manifest["engine"] == "ray" and manifest["complete"] and manifest["lines"] == 3000
    files = [s["file"] for s in manifest["shards"]]
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, *files])
    assert files[0] == "part-00000.parquet"

    table = pq.read_table(out)
    for path in inputs:
        rows = table.filter(pc.equal(table.column("path"), str(path))).sort_by("line")
        expected = single_process(path, tiny_model_path)
        assert rows.column("line").to_pylist() == list(range(len(expected)))
        for got, want in zip(arrays_from_table(rows), expected, strict=True):
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, atol=1e-5)

    again = subprocess.run(args, capture_output=True, env=env, timeout=600)
    assert again.returncode == 0
    assert "already complete: 3000 sentences in" in again.stderr.decode()


@requires("ray")
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray's own, when it pickles its context
def test_embed_dataset_in_a_ray_pipeline(toy_model_path: Path, tmp_path: Path, toy) -> None:
    """The Python API on ray.data.read_text, and a bad line as one clear error."""
    pytest.importorskip("pyarrow")
    from elmo_runtime.output.arrow import arrays_from_table
    from elmo_runtime.output.ray_engine import embed_dataset, embed_files, ray_session

    src = tmp_path / "in.txt"
    src.write_text("The cat sat\nhello world\nx\n")
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\nbad \xff byte\n")
    with ray_session(cpus=2) as ray:
        ds = ray.data.read_text(str(src))
        out = embed_dataset(ds, toy_model_path, mix="top", actors=1, dtype="float16")
        import pyarrow as pa

        table = pa.concat_tables(list(out.iter_batches(batch_format="pyarrow")))
        assert table.column_names == ["tokens", "shape", "vectors"]
        by_tokens = dict(
            zip(
                map(tuple, table.column("tokens").to_pylist()),
                arrays_from_table(table),
                strict=True,
            )
        )
        for line in src.read_text().splitlines():
            got = by_tokens[tuple(line.split())]
            assert got.dtype == np.float16
            np.testing.assert_array_equal(got, toy(line.split())[-1].astype(np.float16))
        with pytest.raises(ElmoError) as e:
            embed_files([str(bad)], tmp_path / "bad-out", toy_model_path, actors=1)
        assert str(e.value) == (
            f"{bad}:2: invalid UTF-8 (byte 0xff at column 5); fix the file or pass --errors replace"
        )
        assert ray.is_initialized()  # a session it did not start is left running
    assert not ray.is_initialized()
    assert not (tmp_path / "bad-out" / "part-00000.parquet").exists()


# ---------------------------------------------------------------- scale (issue 17)


class FakeRay:
    def __init__(self, cpus: float, gpus: float = 0) -> None:
        self.resources = {"CPU": cpus, "GPU": gpus}

    def cluster_resources(self) -> dict[str, float]:
        return self.resources


def test_an_oversubscribed_pool_is_refused_with_the_numbers() -> None:
    from elmo_runtime.output.ray_session import check_pool, default_actors

    with pytest.raises(ElmoError) as e:
        check_pool(FakeRay(4), actors=4, threads=1, gpus_per_actor=0)
    assert str(e.value) == (
        "the Ray cluster has 4 CPUs: 4 actors x 1 CPUs need 4 plus 1 for reading and writing; "
        "pass --actors 3 or fewer, or add CPUs to the cluster"
    )
    with pytest.raises(ElmoError, match="3 actors x 2 CPUs need 6 plus 1"):
        check_pool(FakeRay(6), actors=3, threads=2, gpus_per_actor=0)
    with pytest.raises(ElmoError, match="has 1 GPUs: 3 actors x 0.5 GPUs need 1.5"):
        check_pool(FakeRay(8, gpus=1), actors=3, threads=1, gpus_per_actor=0.5)
    check_pool(FakeRay(4), actors=3, threads=1, gpus_per_actor=0)  # fits: no error
    assert default_actors(FakeRay(4), threads=1, gpus_per_actor=0) == 3
    assert default_actors(FakeRay(1), threads=1, gpus_per_actor=0) == 0
    with pytest.raises(ElmoError, match="has 1 CPUs: 1 actors x 1 CPUs need 1 plus 1"):
        check_pool(FakeRay(1), actors=0, threads=1, gpus_per_actor=0)


def test_a_ray_run_is_identified_by_content_not_mtime(tmp_path: Path) -> None:
    """`touch` keeps a complete run complete; the same size with other bytes is another run."""
    from elmo_runtime.files import sha256_file
    from elmo_runtime.output.rundir import input_info, output_directory

    src = tmp_path / "in.txt"
    src.write_text("a b\n")
    out = tmp_path / "out"
    settings = {"format": "parquet"}

    def identity() -> list[dict]:
        return input_info([str(src)], content=True)

    with output_directory(out, "ray", settings, identity()) as m:
        part = out / "part-00000.parquet"
        part.write_bytes(b"rows")
        m.shards = [{"file": part.name, "rows": 1, "sha256": sha256_file(part), "bytes": 4}]
        m.complete, m.lines = True, 1
        m.save()
    os.utime(src, (1, 1))  # touch: another mtime, the same bytes
    with output_directory(out, "ray", settings, identity()) as m:
        assert m.complete and m.lines == 1
    assert "mtime_ns" not in read_manifest(out)["inputs"][0]
    src.write_text("a c\n")  # the same size, other content
    another = "holds the output of another run \\(a different input\\)"
    with pytest.raises(ElmoError, match=another), output_directory(out, "ray", settings,
                                                                    identity()):
        pass


@requires("ray")
def test_the_token_cache_reaches_the_actors(
    toy_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--token-cache travels to every actor's Embedder (and the mix the driver resolved)."""
    from elmo_runtime.output import ray_engine

    seen: dict[str, object] = {}

    def fake_embed_files(inputs, output, model=None, **kwargs):
        seen.update(kwargs)
        return ray_engine.RayRun(1, 1)

    monkeypatch.setattr(ray_engine, "embed_files", fake_embed_files)
    src = tmp_path / "in.txt"
    src.write_text("a\n")
    result = run("embed", src, tmp_path / "out", "--engine", "ray", "-m", toy_model_path,
                 "--token-cache", "3.5", "--top")
    assert result.exit_code == 0, result.output
    assert seen["settings"].token_cache_mb == 3.5 and seen["settings"].mix.mode == "top"
    assert seen["settings"].path == str(toy_model_path.absolute())  # resolved once, by the driver
    settings = EmbedderSettings(str(toy_model_path), mix="top", provider="cpu", threads=1,
                                batch_size=8)
    actor = ray_engine.EmbedBatches(replace(settings, token_cache_mb=0).to_dict(), "float32")
    assert actor._emb.token_cache.capacity == 0
    actor = ray_engine.EmbedBatches(replace(settings, token_cache_mb=1).to_dict(), "float32")
    assert actor._emb.token_cache.capacity > 0


def _listening(pid: int) -> set[tuple[str, str, int]]:
    """(process name, address, port) of every listening inet socket of ``pid``'s process tree."""
    import psutil

    found = set()
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return found
    for proc in procs:
        try:
            for c in proc.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    found.add((proc.name(), c.laddr.ip, c.laddr.port))
        except psutil.Error:
            continue
    return found


LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


@requires("ray")
@pytest.mark.slow
def test_the_local_ray_listens_on_loopback_only(tiny_model_path: Path, tmp_path: Path) -> None:
    """Every socket of the run's process tree, sampled while it runs, is on 127.0.0.1;
    then a touched input is still a complete run (content identifies it)."""
    pytest.importorskip("pyarrow")
    import ray  # noqa: F401  (Ray ships psutil)

    pytest.importorskip("psutil")
    src = tmp_path / "in.txt"
    src.write_text(corpus(1500, seed=3))
    tmp = Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))
    env = {**os.environ, "HOME": str(tmp_path), "TMPDIR": str(tmp)}
    args = [*elmo_command(), "embed", str(src), str(tmp_path / "out"), "--model",
            str(tiny_model_path), "--engine", "ray", "--actors", "1", "--provider", "cpu",
            "--token-cache", "1"]
    seen: set[tuple[str, str, int]] = set()
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, env=env)
    try:
        while proc.poll() is None:
            seen |= _listening(proc.pid)
            time.sleep(0.2)
        stderr = proc.stderr.read().decode()
    finally:
        proc.kill()  # a no-op once it has exited
        shutil.rmtree(tmp, ignore_errors=True)
    assert proc.returncode == 0, stderr
    assert {name for name, _, _ in seen} >= {"gcs_server", "raylet"}  # the check saw Ray
    assert sorted(s for s in seen if s[1] not in LOOPBACK) == []
    os.utime(src)  # touch
    again = subprocess.run(args, capture_output=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr.decode()
    assert "already complete: 1500 sentences in" in again.stderr.decode()


@requires("ray")
@pytest.mark.slow
def test_more_actors_than_the_cluster_fails_in_seconds(toy_model_path: Path, tmp_path: Path):
    """--address to a cluster too small: an error with the numbers, not a wait forever."""
    pytest.importorskip("pyarrow")
    from elmo_runtime.output.ray_engine import embed_files, ray_session

    src = tmp_path / "in.txt"
    src.write_text("a b\n")
    message = "the Ray cluster has 2 CPUs: 4 actors x 1 CPUs need 4 plus 1"
    with ray_session(cpus=2), pytest.raises(ElmoError, match=message):
        embed_files([str(src)], tmp_path / "out", toy_model_path, actors=4, address="auto")
    assert not (tmp_path / "out" / "part-00000.parquet").exists()


def test_a_directory_input_is_identified_by_its_files(tmp_path: Path) -> None:
    from elmo_runtime.output.rundir import input_info

    corpus_dir = tmp_path / "corpus"
    (corpus_dir / "sub").mkdir(parents=True)
    (corpus_dir / "a.txt").write_text("a b\n")
    (corpus_dir / "sub" / "b.txt").write_text("c\n")
    first = input_info([str(corpus_dir)], content=True)[0]
    assert first["size"] == 6
    os.utime(corpus_dir / "a.txt", (1, 1))
    assert input_info([str(corpus_dir)], content=True)[0] == first  # touch changes nothing
    (corpus_dir / "sub" / "b.txt").write_text("d\n")
    assert input_info([str(corpus_dir)], content=True)[0]["sha256"] != first["sha256"]
