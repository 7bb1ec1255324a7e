"""A run directory: the manifest, the lock and the resume rules that shards and Ray share.

``_manifest.json`` (the leading "_" keeps pyarrow and Ray from taking it for
data) holds:

* ``settings``: what decides the vectors: the model (sha256, size and a
  fingerprint of its metadata), the mix, stateful, tokenize, format, dtype,
  shard and batch size and the UTF-8 error mode;
* ``inputs``: what identifies the input, by **content**: its size and (Ray)
  the sha256 of its bytes, with its path (for messages; Ray also keeps it,
  since its output has a ``path`` column). The local engine also records the
  sha256 of the lines of every shard. Neither the mtime nor (for the local
  engine) the path decides anything: ``touch`` or a move does not make a
  complete run "another run";
* ``shards``: for each complete file its name, what it holds, and the sha256
  and size of the file.

A directory holding another run's manifest (other settings, another input)
is refused unless ``overwrite``, a non-empty directory without a manifest is
always refused, and a lock on the directory keeps two runs from writing it
at once. Stale temp files of killed runs (:data:`..files.PARTIAL`) are removed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ElmoError
from ..files import is_partial, sha256_file, write_text_atomic
from ..loading.hashes import model_sha256

if TYPE_CHECKING:
    from ..format.contract import ModelInfo

MANIFEST = "_manifest.json"
MANIFEST_FORMAT = "elmo-edge-embeddings"
MANIFEST_VERSION = 1
OUTPUT_NAME = re.compile(r"shard-\d{5,}\.(hdf5|npz|parquet)|part-\d{5,}\.parquet")


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
        "sha256": model_sha256(path),  # remembered: a model is hashed once
        "size": path.stat().st_size,
        "metadata_sha256": hashlib.sha256(metadata.encode()).hexdigest(),
    }


def input_info(paths: Iterable[str], content: bool = False) -> list[dict[str, Any]]:
    """Path and size of each input, and with ``content`` the sha256 of its bytes.

    A directory's size is that of its files, its hash covers each file's
    relative path and sha256. stdin ("-") and URLs have neither size nor hash.
    """
    out = []
    for path in paths:
        entry: dict[str, Any] = {"path": path}
        if path != "-" and "://" not in path:
            try:
                entry |= _content(Path(path), content)
            except OSError as e:
                raise ElmoError(f"{path}: cannot read the input ({e.strerror})") from None
        out.append(entry)
    return out


def _content(path: Path, content: bool) -> dict[str, Any]:
    if not path.is_dir():
        return {"size": path.stat().st_size, **({"sha256": sha256_file(path)} if content else {})}
    files = sorted(p for p in path.rglob("*") if p.is_file())
    entry: dict[str, Any] = {"size": sum(p.stat().st_size for p in files)}
    if content:
        digest = hashlib.sha256()
        for p in files:
            digest.update(f"{p.relative_to(path).as_posix()}\0{sha256_file(p)}\n".encode())
        entry["sha256"] = digest.hexdigest()
    return entry


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
    # A grown input's identity, recorded once its new lines are written (:meth:`adopt_inputs`):
    # until then a failed check leaves the manifest describing the input it was made from.
    next_inputs: list[dict[str, Any]] | None = None

    def adopt_inputs(self) -> None:
        """Record the grown input's identity (before the first shard of its new lines)."""
        if self.next_inputs is not None:
            self.inputs, self.next_inputs = self.next_inputs, None

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
        try:
            write_text_atomic(path, json.dumps(self.to_json(), indent=1) + "\n")
        except OSError as e:
            raise ElmoError(f"{path}: cannot write the manifest ({e})") from None


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of an output directory, as JSON; ElmoError if absent or unreadable."""
    path = Path(directory) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))  # a BOM is skipped
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


# What identifies an input, by engine: never the mtime. The local engine also checks the
# lines of every shard as it reads them; Ray's output carries each line's path.
IDENTITY = {"local": ("size",), "ray": ("path", "size", "sha256")}


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
    run's files) and a non-empty directory that holds no manifest.
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
    stale = [p for p in directory.iterdir() if is_partial(p)]  # temp files of a killed run
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
    old = data.get("inputs", [])
    if engine == "local" and _grown(old, inputs):
        return None  # the shards' line hashes tell whether it only grew (shards._run)
    if _inputs_differ(old, inputs, IDENTITY.get(engine, ("path", "size"))):
        return "a different input"
    return None


def _grown(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> bool:
    """Whether the one input is larger than the run's (lines appended, perhaps)."""
    if len(old) != 1 or len(new) != 1:
        return False
    before, after = old[0].get("size"), new[0].get("size")
    return isinstance(before, int) and isinstance(after, int) and after > before


def _resume(data: dict[str, Any], fresh: Manifest) -> Manifest:
    """The manifest to resume, keeping only the files that still verify."""
    fresh.complete, fresh.lines = bool(data.get("complete")), data.get("lines")
    if data.get("inputs") != fresh.inputs:  # a grown input: recorded when its lines are
        fresh.next_inputs, fresh.inputs = fresh.inputs, data.get("inputs", [])
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
