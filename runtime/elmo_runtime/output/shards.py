"""Large outputs: a directory of shards and a manifest, resumable after an interruption.

A run writes ``shard-00000.<format>``, ``shard-00001.<format>``, … of
``shard_size`` input lines each and ``_manifest.json`` (the leading "_"
keeps pyarrow and Ray from taking it for data) holding:

* ``settings``: what decides the vectors: the model (sha256, size and a
  fingerprint of its metadata), the mix, stateful, format, dtype, shard and
  batch size and the UTF-8 error mode;
* ``inputs``: path, size and mtime (for messages and a quick check);
* ``shards``: for each complete shard its file, line range, the sha256 of
  the raw input lines it holds and the sha256 and size of the file.

A shard is written to a temp file and renamed (:func:`.writers.open_writer`),
and only then recorded, so the manifest never lists a partial shard. Running
the same command again resumes: every recorded shard is verified (size and
sha256; a missing or corrupted one is embedded again), and the input lines
of every skipped shard must hash to what was recorded. A directory holding
another run's manifest (other settings, another input) is refused unless
``overwrite``, and a non-empty directory without a manifest is always
refused. A lock on the directory keeps two runs from writing it at once.

Memory stays bounded: lines are read, embedded and written as a stream,
one shard at a time.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..batching import DEFAULT_BATCH_SIZE
from ..corpus import read_sentences
from ..errors import ElmoError
from ..files import sha256_file
from ..mix import ScalarMix
from .writers import (
    arrays_from_table,
    check_dtype,
    import_h5py,
    import_pyarrow,
    infer_format,
    open_writer,
    sync,
)

if TYPE_CHECKING:
    from ..embedder import Embedder
    from ..spec.contract import ModelInfo

MANIFEST = "_manifest.json"
MANIFEST_FORMAT = "elmo-edge-embeddings"
MANIFEST_VERSION = 1
DEFAULT_SHARD_SIZE = 10_000
OUTPUT_NAME = re.compile(r"shard-\d{5,}\.(hdf5|npz|parquet)|part-\d{5,}\.parquet")
PARTIAL = ".partial-"


def model_fingerprint(path: Path, info: ModelInfo) -> dict[str, Any]:
    """What identifies a model file: its sha256, size and a hash of its metadata."""
    metadata = json.dumps(
        {
            "options": json.loads(info.options.to_json()),
            "producer": info.producer_version,
            "source": info.source,
            "quantization": info.quantization,
        },
        sort_keys=True,
    )
    return {
        "sha256": sha256_file(path),
        "size": path.stat().st_size,
        "metadata_sha256": hashlib.sha256(metadata.encode()).hexdigest(),
    }


def mix_spec(mix: str | ScalarMix) -> str | dict[str, Any]:
    """A mix as JSON: its name ("all", "top", "average") or a scalar mix's fields."""
    return mix.to_dict() if isinstance(mix, ScalarMix) else mix


def input_info(paths: Iterable[str]) -> list[dict[str, Any]]:
    """Path, size and mtime of each input (stdin, "-", and URLs have none)."""
    out = []
    for path in paths:
        entry: dict[str, Any] = {"path": path}
        if path != "-" and "://" not in path:
            st = os.stat(path)
            entry |= {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        out.append(entry)
    return out


# ---------------------------------------------------------------------------- the directory


def remove(path: Path) -> None:
    """Remove a file or a directory tree, if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@dataclass
class Manifest:
    """A run's manifest; :meth:`save` replaces the file atomically."""

    directory: Path
    engine: str
    settings: dict[str, Any]
    inputs: list[dict[str, Any]]
    shards: list[dict[str, Any]]
    complete: bool = False
    lines: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "engine": self.engine,
            "settings": self.settings,
            "inputs": self.inputs,
            "complete": self.complete,
            "lines": self.lines,
            "shards": sorted(self.shards, key=lambda f: f["file"]),
        }

    def save(self) -> None:
        path = self.directory / MANIFEST
        tmp = self.directory / f".{MANIFEST}{PARTIAL}{os.getpid()}"
        try:
            tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
            sync(tmp)
            os.replace(tmp, path)
        except OSError as e:
            raise ElmoError(f"{path}: cannot write the manifest ({e})") from None
        finally:
            tmp.unlink(missing_ok=True)


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of an output directory, as JSON; ElmoError if absent or unreadable."""
    path = Path(directory) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ElmoError(f"{directory}: no {MANIFEST}; not an elmo-edge output directory") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ElmoError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise ElmoError(f"{path}: not an elmo-edge manifest")
    if data.get("version") != MANIFEST_VERSION:
        raise ElmoError(
            f"{path}: manifest version {data.get('version')!r}, this elmo-edge reads "
            f"version {MANIFEST_VERSION}"
        )
    return data


def _difference(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """What differs between two runs' settings, for a message (None if nothing)."""
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before != after:
            if key == "model":
                return "a different model file"
            return f"{key} {json.dumps(before)}, now {json.dumps(after)}"
    return None


def _inputs_differ(
    old: list[dict[str, Any]], new: list[dict[str, Any]], keys: tuple[str, ...]
) -> bool:
    if len(old) != len(new):
        return True
    return any(a.get(k) != b.get(k) for a, b in zip(old, new, strict=True) for k in keys)


def _own_names(data: dict[str, Any]) -> list[str]:
    """File names a manifest lists, keeping only plain names inside its directory."""
    shards = data.get("shards") if isinstance(data.get("shards"), list) else []
    names = [f.get("file") for f in shards if isinstance(f, dict)]
    return [n for n in names if isinstance(n, str) and n == Path(n).name and n[:1] not in ".~"]


@contextmanager
def output_directory(
    directory: str | Path,
    engine: str,
    settings: dict[str, Any],
    inputs: list[dict[str, Any]],
    overwrite: bool = False,
) -> Iterator[Manifest]:
    """The locked output directory and its manifest: a new one, or the run to resume.

    Refuses another run's directory unless ``overwrite`` (which removes that
    run's files) and a non-empty directory that holds no manifest. Stale temp
    files of killed runs are removed.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ElmoError(f"{directory}: exists and is not a directory")
    if not directory.parent.is_dir():
        raise ElmoError(f"{directory}: directory {directory.parent} does not exist")
    try:
        directory.mkdir(exist_ok=True)
        fd = os.open(directory, os.O_RDONLY)
    except OSError as e:
        raise ElmoError(f"{directory}: cannot create the output directory ({e})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ElmoError(f"{directory}: another `elmo embed` is writing here") from None
        yield _open_manifest(directory, engine, settings, inputs, overwrite)
    finally:
        os.close(fd)  # releases the lock


def _open_manifest(
    directory: Path,
    engine: str,
    settings: dict[str, Any],
    inputs: list[dict[str, Any]],
    overwrite: bool,
) -> Manifest:
    stale = list(directory.glob(f".*{PARTIAL}*"))  # temp files of a killed run
    fresh = Manifest(directory, engine, settings, inputs, shards=[])
    if not (directory / MANIFEST).exists():
        if any(p not in stale for p in directory.iterdir()):
            raise ElmoError(
                f"{directory}: is not empty and holds no {MANIFEST}; choose a new or empty "
                "directory for the output"
            )
        data: dict[str, Any] = {}
    else:
        try:
            data = read_manifest(directory)
        except ElmoError as e:
            if not overwrite:
                raise ElmoError(f"{e}; pass --overwrite to replace it") from None
            data = {}
        if not data.get("shards"):  # nothing to keep: a run that failed before its first shard
            data = {}
        reason = _refusal(data, engine, settings, inputs) if data else None
        if reason is not None and not overwrite:
            raise ElmoError(
                f"{directory}: holds the output of another run ({reason}); pass --overwrite "
                "to replace it, or choose another directory"
            )
    for path in stale:
        remove(path)
    if data and not overwrite:
        return _resume(data, fresh)
    for name in _own_names(data):
        (directory / name).unlink(missing_ok=True)
    remove_outputs(directory)
    fresh.save()
    return fresh


def remove_outputs(directory: Path) -> None:
    """Remove the data files a run writes (``shard-*``, ``part-*``), listed or not."""
    for path in directory.iterdir():
        if OUTPUT_NAME.fullmatch(path.name):
            path.unlink()


def _refusal(
    data: dict[str, Any], engine: str, settings: dict[str, Any], inputs: list[dict[str, Any]]
) -> str | None:
    """Why a manifest belongs to another run, or None if this run may resume it."""
    if data.get("engine") != engine:
        return f"written by the {data.get('engine')} engine"
    difference = _difference(data.get("settings", {}), settings)
    if difference is not None:
        return difference
    # The local engine hashes the lines of every shard, so a moved input resumes;
    # Ray's output is only known by the path, size and mtime of its inputs.
    keys = ("size",) if engine == "local" else ("path", "size", "mtime_ns")
    if _inputs_differ(data.get("inputs", []), inputs, keys):
        return "a different input"
    return None


def _resume(data: dict[str, Any], fresh: Manifest) -> Manifest:
    """The manifest to resume, keeping only the files that still verify."""
    fresh.complete, fresh.lines = bool(data.get("complete")), data.get("lines")
    for record in data.get("shards", []):
        path = fresh.directory / record["file"]
        if not path.is_file():
            problem = "is missing"
        elif path.stat().st_size != record["bytes"] or sha256_file(path) != record["sha256"]:
            problem = "does not match its checksum"
        else:
            fresh.shards.append(record)
            continue
        warnings.warn(f"{path} {problem}; embedding it again", UserWarning, stacklevel=2)
        fresh.complete = False
    fresh.save()
    return fresh


# ---------------------------------------------------------------------------- the local run


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
    mix: str | ScalarMix = "all",
    fmt: str = "hdf5",
    dtype: str = "float32",
    shard_size: int = DEFAULT_SHARD_SIZE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    errors: str = "strict",
    overwrite: bool = False,
    progress: Callable[[int], None] = lambda lines: None,
) -> ShardedRun:
    """Embed the lines of ``stream`` into shards under ``directory``, resuming a run there.

    ``mix`` is the mix ``emb`` was made with (it is recorded, not applied).
    With a stateful ``emb`` the states are reset at the start of every shard,
    so a resumed run gives the same vectors as an uninterrupted one.
    ``progress`` is called with the number of lines done (embedded or
    verified) as the run goes on; exceptions it raises stop the run.
    """
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size <= 0:
        raise ElmoError(f"shard size must be a positive integer, found {shard_size!r}")
    fmt = infer_format("", fmt)
    settings = {
        "model": model_fingerprint(emb.model_path, emb.info),
        "mix": mix_spec(mix),
        "stateful": emb.stateful,
        "format": fmt,
        "dtype": check_dtype(dtype).name,
        "shard_size": shard_size,
        "batch_size": batch_size,  # batches decide stateful rows and the last float bits
        "errors": errors,
    }
    with output_directory(
        directory, "local", settings, input_info([input_name]), overwrite
    ) as manifest:
        return _run(emb, stream, input_name, manifest, batch_size, progress)


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
    lines = HashedLines(stream)
    sentences = read_sentences(lines, input_name, settings["errors"])
    for index in itertools.count():
        first = next(sentences, None)
        if first is None:
            break
        chunk = itertools.chain([first], itertools.islice(sentences, size - 1))
        start = index * size
        record = done.get(index)
        if record is not None:
            count = sum(1 for _ in chunk)
            if count != record["lines"] or lines.digest() != record["input_sha256"]:
                raise _changed(manifest, input_name, f"lines {start + 1}-{start + count}")
            progress(count)
            run.resumed += 1
        else:
            record = _embed_shard(emb, chunk, manifest, index, start, fmt, batch_size, progress)
            record["input_sha256"] = lines.digest()
            manifest.shards.append(record)
            manifest.save()
        run.shards += 1
        run.lines = start + record["lines"]
    if any(i >= run.shards for i in done):
        raise _changed(manifest, input_name, f"the end (line {run.lines + 1} on)")
    manifest.complete, manifest.lines = True, run.lines
    manifest.save()
    return run


def _embed_shard(
    emb: Embedder,
    chunk: Iterator[list[str]],
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
    sentences, to_embed = itertools.tee(chunk)
    dtype = manifest.settings["dtype"]
    with open_writer(path, fmt, dtype, first_index=start) as writer:
        for tokens, vectors in zip(
            sentences, emb.embed_sentences(to_embed, batch_size), strict=True
        ):
            writer.write(tokens, vectors)
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
