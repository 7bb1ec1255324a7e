"""`elmo embed proteins.fasta out.h5` (issue 22.4): one residue per token, datasets keyed
by record id, the layer sum per residue or its mean per protein; every refusal one line
naming the file, line and record. The toy model's vectors are known in closed form
(support.models.toy_vectors), so each test checks the numbers, not only the shapes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from elmo_runtime.embedder import Embedder
from elmo_runtime.errors import InputError
from elmo_runtime.fasta import is_fasta, read_fasta
from support.cli import run_elmo as run
from support.errors import one_line_error

Toy = Callable[..., np.ndarray]


def embed_fasta(tmp_path: Path, model: Path, text: str, *args: object,
                out: str = "out.h5") -> dict[str, np.ndarray]:
    source = tmp_path / "in.fasta"
    source.write_bytes(text.encode())
    result = run("embed", source, tmp_path / out, "--model", model, *args)
    assert result.exit_code == 0, result.output
    if out.endswith(".npz"):
        with np.load(tmp_path / out, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    with h5py.File(tmp_path / out) as f:
        for key in f:
            assert f[key].attrs["original_id"] == key  # where bio_embeddings' readers look
        return {k: f[k][()] for k in f}


def residue_sum(toy: Toy, seq: str) -> np.ndarray:
    """SeqVec users' per-residue vectors: ``embed_sentence(list(seq)).sum(0)``."""
    return toy(list(seq)).sum(0)


def test_records_are_keyed_by_the_first_word_of_their_header(
        tmp_path: Path, toy_model_path: Path, toy: Toy) -> None:
    text = (">sp|P69905|HBA_HUMAN Hemoglobin subunit alpha OS=Homo sapiens\nMVLSPADKTN\nVKAAW\n"
            "\n>second\tno description\r\nGHAGEY\r\n>3\nM\n")
    got = embed_fasta(tmp_path, toy_model_path, text)
    assert sorted(got) == ["3", "second", "sp|P69905|HBA_HUMAN"]
    np.testing.assert_array_equal(got["sp|P69905|HBA_HUMAN"],
                                  residue_sum(toy, "MVLSPADKTNVKAAW"))
    np.testing.assert_array_equal(got["second"], residue_sum(toy, "GHAGEY"))
    assert got["3"].shape == (1, toy(["M"]).shape[-1])


def test_reduce_mean_is_the_mean_over_residues_of_the_layer_sum(
        tmp_path: Path, toy_model_path: Path, toy: Toy) -> None:
    got = embed_fasta(tmp_path, toy_model_path, ">a\nMKV\n>b\nGGGWWC\n", "--reduce", "mean",
                      out="out.npz")
    np.testing.assert_array_equal(got["a"], toy(list("MKV")).sum(0).mean(0))
    np.testing.assert_array_equal(got["b"], toy(list("GGGWWC")).sum(0).mean(0))
    assert got["a"].shape == (toy(["M"]).shape[-1],)


def test_a_mix_flag_replaces_the_layer_sum(tmp_path: Path, toy_model_path: Path,
                                           toy: Toy) -> None:
    got = embed_fasta(tmp_path, toy_model_path, ">a\nMKV\n", "--top")
    np.testing.assert_array_equal(got["a"], toy(list("MKV"))[-1])


def test_lowercase_residues_are_read_as_uppercase(tmp_path: Path, toy_model_path: Path,
                                                  toy: Toy) -> None:
    got = embed_fasta(tmp_path, toy_model_path, ">lower\nmkvLa\n>upper\nMKVLA\n")
    np.testing.assert_array_equal(got["lower"], got["upper"])
    np.testing.assert_array_equal(got["lower"], residue_sum(toy, "MKVLA"))


def test_a_final_stop_is_dropped(tmp_path: Path, toy_model_path: Path, toy: Toy) -> None:
    got = embed_fasta(tmp_path, toy_model_path, ">a\nMKV\nLA*\n\n>b\nMK*\n")
    np.testing.assert_array_equal(got["a"], residue_sum(toy, "MKVLA"))
    np.testing.assert_array_equal(got["b"], residue_sum(toy, "MK"))


def test_unknown_and_ambiguous_residues_are_embedded_as_they_are(
        tmp_path: Path, toy_model_path: Path, toy: Toy) -> None:
    """X, B, Z, U, O, J: one token each, their own char ids (SeqVec's list(seq))."""
    got = embed_fasta(tmp_path, toy_model_path, ">odd\nMXBZUOJ\n>x\nMXXXXXXA\n")
    np.testing.assert_array_equal(got["odd"], residue_sum(toy, "MXBZUOJ"))
    assert len({tuple(row) for row in got["odd"]}) == 7  # no two letters share a vector
    np.testing.assert_array_equal(got["x"], residue_sum(toy, "MXXXXXXA"))


@pytest.mark.parametrize(("text", "message"), [
    (">a\nMK\n>b\nGG\n>a\nWW\n", "in.fasta:5: record id 'a' repeats the one on line 1"),
    (">a\nMK\n>empty description\n>c\nGG\n", "in.fasta:3: record 'empty' has no residues"),
    (">a\nMK\n>last\n", "in.fasta:3: record 'last' has no residues"),
    (">a\nMK\n>*only\n*\n", "in.fasta:3: record '*only' has no residues"),
    (">a/b\nMK\n", "in.fasta:1: record id 'a/b' holds '/'"),
    (">.\nMK\n", "in.fasta:1: record id '.' cannot be an hdf5 key"),
    (">..\nMK\n", "in.fasta:1: record id '..' cannot be an hdf5 key"),
    (">a\nMK\n>sentence_to_index x\nGG\n",
     "in.fasta:3: record id 'sentence_to_index' is the key readers of AllenNLP's layout"),
    (">\nMK\n", "in.fasta:1: a header without an id"),
    (">a\nMK*LV\n", "in.fasta:2: record 'a': a stop '*' inside the sequence (residue 3"),
    (">a\nMK*\nLV\n", "in.fasta:2: record 'a': a stop '*' inside the sequence"),
    (">a\nMK-LV\n", "in.fasta:2: record 'a': '-', not a residue letter (residue 3"),
    (">a\nMK\nGG1\n", "in.fasta:3: record 'a': '1', not a residue letter"),
    (">a\nMKé\n", "in.fasta:2: record 'a': 'É', not a residue letter"),
])
def test_bad_records_are_refused_in_one_line(tmp_path: Path, toy_model_path: Path,
                                             text: str, message: str) -> None:
    source = tmp_path / "in.fasta"
    source.write_bytes(text.encode())
    result = run("embed", source, tmp_path / "out.h5", "--model", toy_model_path)
    one_line_error(result, message)
    assert not (tmp_path / "out.h5").exists()  # nothing under the final name


def test_text_before_the_first_header_is_refused(tmp_path: Path, toy_model_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_bytes(b"MKV\n>a\nMK\n")
    result = run("embed", source, tmp_path / "out.h5", "--model", toy_model_path,
                 "--input-format", "fasta")
    one_line_error(result, "in.txt:1: text before the first '>' header")


def test_fasta_is_found_by_content_or_named(tmp_path: Path, toy_model_path: Path,
                                            toy: Toy) -> None:
    source = tmp_path / "proteins.txt"  # the name does not matter, the first '>' does
    source.write_bytes(b"\n\n  >p\nMKV\n")
    assert is_fasta(str(source))
    assert not is_fasta(str(tmp_path))
    as_text = tmp_path / "text.h5"
    assert run("embed", source, as_text, "--model", toy_model_path, "--input-format",
               "text").exit_code == 0
    with h5py.File(as_text) as f:
        assert "sentence_to_index" in f  # read as sentences: AllenNLP's layout
    result = run("embed", "-", tmp_path / "stdin.h5", "--model", toy_model_path,
                 "--input-format", "fasta", input=b">p\nMKV\n")
    assert result.exit_code == 0, result.output
    assert "wrote 1 record to" in result.stderr
    with h5py.File(tmp_path / "stdin.h5") as f:
        np.testing.assert_array_equal(f["p"][()], residue_sum(toy, "MKV"))


@pytest.mark.parametrize(("args", "message"), [
    (("out.parquet",), "FASTA input is written keyed by record id, as hdf5 or npz"),
    (("out.h5", "--shard-size", "5"), "FASTA input writes one file keyed by record id"),
    (("out.h5", "--tokenize"), "--tokenize is for raw text"),
    (("out.h5", "--stateful"), "--stateful: FASTA records are embedded stateless"),
])
def test_what_fasta_cannot_go_with_is_a_usage_error(
        tmp_path: Path, toy_model_path: Path, args: tuple[str, ...], message: str) -> None:
    source = tmp_path / "in.fasta"
    source.write_bytes(b">a\nMK\n")
    out, *rest = args
    result = run("embed", source, tmp_path / out, "--model", toy_model_path, *rest)
    one_line_error(result, message, code=2)


def test_reduce_needs_fasta(tmp_path: Path, toy_model_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_bytes(b"a b\n")
    result = run("embed", source, tmp_path / "o.h5", "--model", toy_model_path,
                 "--reduce", "mean")
    one_line_error(result, "--reduce is for FASTA input", code=2)


def test_max_sentence_tokens_bounds_records_and_lines(tmp_path: Path,
                                                      toy_model_path: Path) -> None:
    source = tmp_path / "in.fasta"
    source.write_bytes(b">short\nMKV\n>long\nMKVLA\nGGGGG\nW\n")
    result = run("embed", source, tmp_path / "out.h5", "--model", toy_model_path,
                 "--max-sentence-tokens", "10")
    one_line_error(result, "in.fasta:3: record 'long' has more than 10 residues")
    ok = run("embed", source, tmp_path / "out.h5", "--model", toy_model_path,
             "--max-sentence-tokens", "11")
    assert ok.exit_code == 0, ok.output
    text = tmp_path / "in.txt"
    text.write_bytes(b"a b c\n")
    result = run("embed", text, tmp_path / "t.h5", "--model", toy_model_path,
                 "--max-sentence-tokens", "2")
    one_line_error(result, "in.txt:1: 3 tokens, more than 2")


def test_embedder_max_sentence_tokens(toy_model_path: Path, toy: Toy) -> None:
    long = ["w"] * 10_001
    with pytest.raises(InputError, match="sentence 0: 10001 tokens, more than 10000"):
        Embedder(toy_model_path).embed_sentence(long)
    # one call (the toy's closed form is no LSTM: pieces carrying its state would differ)
    emb = Embedder(toy_model_path, max_sentence_tokens=10_001, max_batch_tokens=20_000)
    np.testing.assert_array_equal(emb.embed_sentence(long), toy(long))
    with pytest.raises(InputError, match="sentence 1: 3 tokens, more than 2"):
        list(Embedder(toy_model_path, max_sentence_tokens=2).embed_sentences([["a"],
                                                                              ["a"] * 3]))
    with pytest.raises(ValueError, match="max_sentence_tokens must be a positive integer"):
        Embedder(toy_model_path, max_sentence_tokens=0)


def test_reader_streams_records() -> None:
    records = list(read_fasta([b">a x\n", b"MK\r", b"v*\n", b">b\n", b"G G\n"], "s"))
    assert [(r.id, r.residues, r.line) for r in records] == [
        ("a", ["M", "K", "V"], 1), ("b", ["G", "G"], 4)]
