"""Published ELMo models as their owners ship them: where options.json and the weights are.

A *source* is one of:

* an AllenNLP / bilm-tf pair: ``options.json`` + ``weights.hdf5`` given separately;
* a folder as downloaded or unpacked: an NLPL model (``options.json``, ``model.hdf5``,
  ``vocab.txt(.gz)``), a SeqVec folder (``options.json`` + ``weights.hdf5``) or a
  bilm-tf folder (``*options*.json`` + ``*weights*.hdf5``); a folder holding only one
  such folder (a ZIP unpacked with its top folder) is looked into;
* a ZIP as downloaded (an NLPL ``<ID>.zip``, SeqVec's ``seqvec.zip`` with its
  ``uniref50_v2/`` folder): the same rules inside the archive.

Weights: ``model.hdf5`` (simple_elmo's name), else the one ``*weights*.hdf5``, else the
one ``*.hdf5``; options: ``options.json``, else the one ``*options*.json``; vocabulary
(only a char-id cache, never needed for the vectors): ``vocab.txt.gz`` or ``vocab.txt``.
An ELMoForManyLangs folder (``config.json``) is not a source here.

ZIP members are read with the standard library's :mod:`zipfile` and only after every
entry passed :func:`check_zip`: no absolute or ``..`` path, no symlink, no encrypted or
duplicate entry, declared sizes within :data:`MAX_TOTAL_BYTES` and every sizeable
member's size at most :data:`MAX_RATIO` times its compressed size; :func:`extract`
also counts the bytes it writes and stops past the declared size (a lying header).
Needs no h5py, torch or tensorflow.
"""

from __future__ import annotations

import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import ElmoError

MAX_ENTRIES = 10_000  # an NLPL ZIP holds 3 files
MAX_TOTAL_BYTES = 32 * 2**30  # the largest published ELMo (5.5B) is ~0.8 GB; NLPL 212 ~1.5 GB
MAX_RATIO = 100  # float weights compress ~1.1x, vocab text ~4x; a zip bomb 1,000x and more
RATIO_FLOOR = 2**20  # members smaller than this are bounded by size alone
CHUNK = 2**20
OPTIONS = "options.json"
WEIGHTS_NAMES = ("model.hdf5",)  # simple_elmo's first choice; then *weights*.hdf5, *.hdf5
VOCABS = ("vocab.txt.gz", "vocab.txt")


class SourceError(ElmoError):
    """A model folder, pair or ZIP that does not hold a usable ELMo model, or an unsafe ZIP."""


@dataclass(frozen=True)
class Source:
    """Where a model's files are. ``archive``: the ZIP they are members of (None: on disk);
    ``options``/``weights``/``vocab``: paths on disk, or member names in ``archive``."""

    options: str
    weights: str
    vocab: str | None = None
    archive: Path | None = None

    @property
    def files(self) -> tuple[Path, ...]:
        """The files on disk whose content is the model (what the cache key hashes)."""
        if self.archive is not None:
            return (self.archive,)
        return (Path(self.options), Path(self.weights))

    def describe(self) -> str:
        """How errors and messages name the model."""
        if self.archive is not None:
            return f"{self.archive} ({self.options}, {self.weights})"
        return f"{self.options} + {self.weights}"


def locate(model: str | os.PathLike, weights: str | os.PathLike | None = None) -> Source:
    """The :class:`Source` of a pair, a folder or a ZIP; raises SourceError naming what lacks."""
    path = Path(model)
    if weights is not None:
        return _pair(path, Path(weights))
    if path.is_dir():
        return _folder(path)
    if path.is_file() and zipfile.is_zipfile(path):
        return _zip(path)
    if path.is_file():
        raise SourceError(
            f"{path}: neither a ZIP nor a folder; give options.json with its weights file "
            "(options_file, weight_file)")
    raise SourceError(f"{path}: no such file or folder")


def _pair(options: Path, weights: Path) -> Source:
    for p, what in ((options, "options file"), (weights, "weight file")):
        if not p.is_file():
            raise SourceError(f"{p}: {what} not found")
    with open(options, "rb") as f:
        if f.read(8) == b"\x89HDF\r\n\x1a\n":
            raise SourceError(f"{options}: is an HDF5 file, not an options.json — arguments "
                              "swapped? (options_file, weight_file)")
    return Source(str(options), str(weights))


def _folder(directory: Path) -> Source:
    names = sorted(p.name for p in directory.iterdir() if p.is_file())
    if "config.json" in names and OPTIONS not in names:
        raise SourceError(
            f"{directory}: an ELMoForManyLangs model (config.json), which AllenNLP and "
            "simple_elmo cannot read either: `elmo convert DIR -o model.onnx`, then "
            "elmo_runtime.Embedder('model.onnx')")
    if not _options_name(names) and not any(n.endswith(".hdf5") for n in names):
        subdirs = [p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if len(subdirs) == 1:
            return _folder(subdirs[0])
    options, weights, vocab = _choose(names, str(directory))
    def full(name: str | None) -> str | None:
        return None if name is None else str(directory / name)
    return Source(str(directory / options), str(directory / weights), full(vocab))


def _options_name(names: list[str]) -> str | None:
    if OPTIONS in names:
        return OPTIONS
    found = [n for n in names if n.endswith(".json") and "options" in n]
    return found[0] if len(found) == 1 else None


def _choose(names: list[str], where: str) -> tuple[str, str, str | None]:
    """(options, weights, vocab) among the file names of one folder."""
    options = _options_name(names)
    if options is None:
        raise SourceError(f"{where}: no options.json (nor one *options*.json) in it")
    hdf5 = [n for n in names if n.endswith(".hdf5")]
    weights = [n for n in hdf5 if n in WEIGHTS_NAMES]
    weights = weights or [n for n in hdf5 if "weights" in n] or hdf5
    if len(weights) != 1:
        found = ", ".join(hdf5) if hdf5 else "none"
        raise SourceError(
            f"{where}: expected model.hdf5, one *weights*.hdf5 or one *.hdf5 (found {found}); "
            "name the files: (options_file, weight_file)")
    vocab = next((v for v in VOCABS if v in names), None)
    return options, weights[0], vocab


def check_zip(archive: Path, zf: zipfile.ZipFile) -> None:
    """Raise SourceError unless every entry of ``zf`` is safe to read (see the module doc)."""
    infos = zf.infolist()
    if len(infos) > MAX_ENTRIES:
        raise SourceError(f"{archive}: {len(infos)} entries, more than {MAX_ENTRIES}")
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if (name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0])
                or "\x00" in name):
            raise SourceError(f"{archive}: entry {name!r} points outside the archive "
                              "(path traversal); refused")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise SourceError(f"{archive}: entry {name!r} is a symbolic link; refused")
        if info.flag_bits & 0x1:
            raise SourceError(f"{archive}: entry {name!r} is encrypted; refused")
        if name in seen:
            raise SourceError(f"{archive}: entry {name!r} appears twice; refused")
        seen.add(name)
        total += info.file_size
        if total > MAX_TOTAL_BYTES:
            raise SourceError(f"{archive}: declares more than {MAX_TOTAL_BYTES // 2**30} GiB "
                              "uncompressed; refused (zip bomb?)")
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * info.compress_size:
            ratio = info.file_size / max(1, info.compress_size)
            raise SourceError(
                f"{archive}: entry {name!r} expands {ratio:,.0f}x ({info.file_size:,} bytes "
                f"from {info.compress_size:,}), more than {MAX_RATIO}x; refused (zip bomb?)")


def _zip(archive: Path) -> Source:
    try:
        with zipfile.ZipFile(archive) as zf:
            check_zip(archive, zf)
            files = [i.filename for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError) as e:
        raise SourceError(f"{archive}: cannot read the ZIP ({e})") from None
    folders: dict[str, list[str]] = {}
    for name in files:
        parent, _, base = name.rpartition("/")
        folders.setdefault(parent, []).append(base)
    candidates = [d for d, names in folders.items() if _options_name(sorted(names))]
    if len(candidates) != 1:
        what = "no options.json" if not candidates else f"{len(candidates)} model folders"
        raise SourceError(f"{archive}: {what} in the ZIP; expected one folder with "
                          "options.json and its *.hdf5 (an NLPL or SeqVec download)")
    folder = candidates[0]
    options, weights, vocab = _choose(sorted(folders[folder]), f"{archive}:{folder or '/'}")
    prefix = f"{folder}/" if folder else ""
    return Source(prefix + options, prefix + weights,
                  None if vocab is None else prefix + vocab, archive)


def extract(source: Source, directory: Path) -> tuple[Path, Path]:
    """(options, weights) on disk: the files themselves, or the ZIP's members copied into
    ``directory`` (bounded by their declared sizes; SourceError on a lying header)."""
    if source.archive is None:
        return Path(source.options), Path(source.weights)
    out = []
    try:
        with zipfile.ZipFile(source.archive) as zf:
            check_zip(source.archive, zf)
            for member, target in ((source.options, "options.json"),
                                   (source.weights, "weights.hdf5")):
                out.append(_copy_member(source.archive, zf, member, directory / target))
    except (zipfile.BadZipFile, OSError) as e:
        raise SourceError(f"{source.archive}: cannot read the ZIP ({e})") from None
    return out[0], out[1]


def read_member(source: Source, member: str, limit: int = 2**20) -> bytes:
    """A small member's bytes (``limit`` at most), from the ZIP or from disk."""
    if source.archive is None:
        with open(member, "rb") as f:
            data = f.read(limit + 1)
    else:
        with zipfile.ZipFile(source.archive) as zf, zf.open(member) as f:
            data = f.read(limit + 1)
    if len(data) > limit:
        raise SourceError(f"{member}: larger than {limit:,} bytes; not an options.json")
    return data


def _copy_member(archive: Path, zf: zipfile.ZipFile, member: str, target: Path) -> Path:
    declared = zf.getinfo(member).file_size
    written = 0
    with zf.open(member) as src, open(target, "wb") as dst:
        while chunk := src.read(CHUNK):
            written += len(chunk)
            if written > declared:
                raise SourceError(f"{archive}: entry {member!r} holds more than its declared "
                                  f"{declared:,} bytes; refused (zip bomb?)")
            dst.write(chunk)
    return target
