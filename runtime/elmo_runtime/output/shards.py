"""Large outputs on one machine: a directory of shards and a manifest, resumable.

A run writes ``shard-00000.<format>``, ``shard-00001.<format>``, … of
``shard_size`` input lines each and ``_manifest.json`` (:mod:`.rundir`: the
settings, the input's size and, for every complete shard, its line range,
the sha256 of the input lines it holds and the sha256 and size of the file).

A shard is written to a temp file and renamed (:func:`.writers.open_writer`),
and only then recorded, so the manifest never lists a partial shard. Running
the same command again resumes: every recorded shard is verified (size and
sha256; a missing or corrupted one is embedded again), and the input lines
of every skipped shard must hash to what was recorded, so a run is
identified by the content of its input, not its path or mtime. An input that
grew (lines appended) resumes too: its earlier shards' lines still hash to
what was recorded, so only the last shard of the run before (with the new
lines after it) and the shards after it are embedded.

Memory stays bounded: lines are read, embedded and written as a stream,
one shard at a time.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..corpus import Line, iter_lines, read_lines
from ..errors import ElmoError
from ..files import sha256_file
from .arrow import arrays_from_table, import_pyarrow
from .rundir import MANIFEST, Manifest, input_info, model_fingerprint, output_directory
from .rundir import read_manifest as read_manifest
from .values import check_dtype
from .writers import import_h5py, infer_format, open_writer

if TYPE_CHECKING:
    from ..embedder import Embedder

__all__ = ["MANIFEST", "DEFAULT_SHARD_SIZE", "embed_sharded", "iter_vectors", "read_manifest"]

DEFAULT_SHARD_SIZE = 10_000


class HashedLines:
    """Lines of a binary stream, hashed as they pass; :meth:`digest` starts a new hash."""

    def __init__(self, stream: Iterable[bytes]):
        self._stream = stream
        self._hash = hashlib.sha256()

    def __iter__(self) -> Iterator[bytes]:
        for line in self._stream:
            self._hash.update(line)
            yield line

    def digest(self) -> str:
        """The sha256 of the lines read since the last call."""
        value, self._hash = self._hash.hexdigest(), hashlib.sha256()
        return value

    def peek(self) -> str:
        """The sha256 of the lines read since the last :meth:`digest`, without a new start."""
        return self._hash.copy().hexdigest()


def shard_name(index: int, fmt: str) -> str:
    return f"shard-{index:05d}.{fmt}"


@dataclass
class ShardedRun:
    """What a sharded run did: lines in all, shards in all, shards reused from before."""

    lines: int = 0
    shards: int = 0
    resumed: int = 0


def embed_sharded(
    emb: Embedder,
    stream: Iterable[bytes],
    input_name: str,
    directory: str | Path,
    *,
    fmt: str = "hdf5",
    dtype: str = "float32",
    shard_size: int | None = None,
    batch_size: int | None = None,
    errors: str = "strict",
    tokenize: bool = False,
    overwrite: bool = False,
    progress: Callable[[int], None] = lambda lines: None,
) -> ShardedRun:
    """Embed the lines of ``stream`` into shards under ``directory``, resuming a run there.

    ``emb`` decides the model and the mix (``emb.settings.mix`` is recorded). Lines
    are read as :func:`..corpus.read_lines` reads them (``errors``,
    ``tokenize``); their stripped text keys ``sentence_to_index``.
    With a stateful ``emb`` the states are reset at the start of every shard,
    so a resumed run gives the same vectors as an uninterrupted one.
    ``progress`` is called with the number of lines done (embedded or
    verified) as the run goes on; exceptions it raises stop the run.
    ``shard_size`` None: the size recorded by the run in ``directory`` when
    there is one to resume, else :data:`DEFAULT_SHARD_SIZE`. ``batch_size``
    (None: ``emb.settings.batch_size``) is part of what identifies a run only
    when stateful (it decides which row's state a sentence continues);
    stateless vectors do not depend on it, so a resume may change it.
    """
    if shard_size is None:
        shard_size = DEFAULT_SHARD_SIZE if overwrite else recorded_shard_size(directory)
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size <= 0:
        raise ElmoError(f"shard size must be a positive integer, found {shard_size!r}")
    fmt = infer_format("", fmt)
    batch_size = replace(emb.settings, **({} if batch_size is None else
                                          {"batch_size": batch_size})).batch_size  # checked
    settings = {
        "model": model_fingerprint(emb.model_path, emb.info),
        "mix": emb.settings.mix.key(),
        "stateful": emb.stateful,
        "tokenize": tokenize,
        "format": fmt,
        "dtype": check_dtype(dtype).name,
        "shard_size": shard_size,
        "errors": errors,
    }
    if emb.stateful:
        settings["batch_size"] = batch_size  # the batch row decides which state continues
    with output_directory(
        directory, "local", settings, input_info([input_name]), overwrite
    ) as manifest:
        return _run(emb, stream, input_name, manifest, batch_size, progress)


def recorded_shard_size(directory: str | Path) -> int:
    """The shard size of the local run recorded in ``directory``, else the default."""
    if not (Path(directory) / MANIFEST).is_file():
        return DEFAULT_SHARD_SIZE
    try:
        data = read_manifest(directory)
    except ElmoError:
        return DEFAULT_SHARD_SIZE  # opening the directory reports the bad manifest
    size = data.get("settings", {}).get("shard_size") if data.get("engine") == "local" else None
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else (
        DEFAULT_SHARD_SIZE)


def _changed(manifest: Manifest, input_name: str, where: str) -> ElmoError:
    return ElmoError(
        f"{input_name}: {where} differs from the input of the run in {manifest.directory}; "
        "pass --overwrite to start over"
    )


def _run(
    emb: Embedder,
    stream: Iterable[bytes],
    input_name: str,
    manifest: Manifest,
    batch_size: int,
    progress: Callable[[int], None],
) -> ShardedRun:
    settings = manifest.settings
    size, fmt = settings["shard_size"], settings["format"]
    done = {record["index"]: record for record in manifest.shards}
    run = ShardedRun()
    lines = HashedLines(iter_lines(stream, input_name))
    sentences = read_lines(lines, input_name, settings["errors"], settings["tokenize"],
                           emb.max_sentence_tokens)
    for index in itertools.count():
        first = next(sentences, None)
        if first is None:
            break
        chunk = itertools.chain([first], itertools.islice(sentences, size - 1))
        start = index * size
        record = done.get(index)
        if record is not None and record["lines"] < size:  # the end of the run before
            chunk, record = _grown_shard(chunk, record, lines, manifest, input_name, start)
        if record is not None:
            count = sum(1 for _ in chunk)
            if count != record["lines"] or lines.digest() != record["input_sha256"]:
                raise _changed(manifest, input_name, f"lines {start + 1}-{start + count}")
            progress(count)
            run.resumed += 1
        else:
            manifest.adopt_inputs()
            record = _embed_shard(emb, chunk, manifest, index, start, fmt, batch_size, progress)
            record["input_sha256"] = lines.digest()
            manifest.shards.append(record)
            manifest.save()
        run.shards += 1
        run.lines = start + record["lines"]
    if any(i >= run.shards for i in done):
        raise _changed(manifest, input_name, f"the end (line {run.lines + 1} on)")
    manifest.adopt_inputs()
    manifest.complete, manifest.lines = True, run.lines
    manifest.save()
    return run


def _grown_shard(
    chunk: Iterator[Line], record: dict[str, Any], lines: HashedLines, manifest: Manifest,
    input_name: str, start: int,
) -> tuple[Iterator[Line], dict[str, Any] | None]:
    """The last shard of the run before, read again: ``(its lines, record)`` when it is
    as it was, ``(its lines, None)`` when lines were appended after it (it is embedded
    again with them; the earlier shards were verified by their own line hashes)."""
    held = list(itertools.islice(chunk, record["lines"]))
    if len(held) != record["lines"] or lines.peek() != record["input_sha256"]:
        raise _changed(manifest, input_name, f"lines {start + 1}-{start + len(held)}")
    more = list(chunk)  # at most shard_size lines
    if not more:
        return iter(held), record
    manifest.shards.remove(record)
    manifest.complete = False
    return iter(held + more), None


def _embed_shard(
    emb: Embedder,
    chunk: Iterator[Line],
    manifest: Manifest,
    index: int,
    start: int,
    fmt: str,
    batch_size: int,
    progress: Callable[[int], None],
) -> dict[str, Any]:
    """Write one shard atomically; its manifest record (without the input hash)."""
    if emb.stateful:
        emb.reset_states()
    name = shard_name(index, fmt)
    path = manifest.directory / name
    lines, to_embed = itertools.tee(chunk)
    dtype = manifest.settings["dtype"]
    with open_writer(path, fmt, dtype, first_index=start) as writer:
        tokens = (line.tokens for line in to_embed)
        for line, vectors in zip(lines, emb.embed_sentences(tokens, batch_size), strict=True):
            writer.write(line.tokens, vectors, key=line.key)
            progress(1)
    return {
        "index": index,
        "file": name,
        "first_line": start,
        "lines": writer.count,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
    }


# ---------------------------------------------------------------------------- reading back


def iter_vectors(directory: str | Path) -> Iterator[tuple[int, np.ndarray]]:
    """``(line index, array)`` of every line of a complete local run, in input order."""
    data = read_manifest(directory)
    if data.get("engine") != "local":
        raise ElmoError(
            f"{directory}: written by the {data.get('engine')} engine; read its Parquet files "
            "with pyarrow.dataset"
        )
    if not data.get("complete"):
        raise ElmoError(f"{directory}: the run is not complete; run the same command to resume")
    fmt = data["settings"]["format"]
    for record in sorted(data["shards"], key=lambda r: r["index"]):
        path = Path(directory) / record["file"]
        lines = range(record["first_line"], record["first_line"] + record["lines"])
        yield from zip(lines, _read_shard(path, fmt, lines), strict=True)


def _read_shard(path: Path, fmt: str, lines: range) -> Iterator[np.ndarray]:
    if fmt == "parquet":
        yield from arrays_from_table(import_pyarrow()[1].read_table(path))
    elif fmt == "npz":
        with np.load(path, allow_pickle=False) as z:
            for line in lines:
                yield z[str(line)]
    else:
        with import_h5py().File(path, "r") as f:
            for line in lines:
                yield f[str(line)][...]
