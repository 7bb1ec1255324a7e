"""Small file helpers shared by both sides: hashing, reading with one-line errors and
the one atomic write.

Every output of elmo-edge (embeddings, shards, manifests, models, checkpoints,
corpora) is written through :func:`atomic_path`: to ``.{name}.partial-{pid}``
beside the final name, flushed to the disk (fsync), renamed over the final
name, and the directory entry flushed too. An error or an interrupt removes
the temp file and leaves the final name untouched. :data:`PARTIAL` is the
marker that tells a temp file of a killed run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import stat
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from .errors import ElmoError

HASH_BLOCK = 1 << 20
PARTIAL = ".partial-"


def sha256_file(path: str | Path) -> str:
    """The hex sha256 of a file, read a block at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def partial_path(path: str | Path) -> Path:
    """The temp name beside ``path`` that this process writes before renaming."""
    path = Path(path)
    return path.with_name(f".{path.name}{PARTIAL}{os.getpid()}")


def is_partial(path: str | Path) -> bool:
    """Whether ``path`` is the temp file of a (possibly killed) write."""
    name = Path(path).name
    return name.startswith(".") and PARTIAL in name


def fsync_path(path: str | Path) -> None:
    """Flush a file's (or a directory's) data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: str | Path, path: str | Path) -> None:
    """Flush ``tmp``, rename it over ``path`` and flush the directory: the atomic step."""
    fsync_path(tmp)
    os.replace(tmp, path)
    with suppress(OSError):  # some filesystems cannot fsync a directory; the rename is done
        fsync_path(Path(path).parent)


def check_regular_output(path: str | Path) -> None:
    """ElmoError unless ``path`` is absent or a regular file (not a symlink, device, FIFO,
    socket or directory): the rename of :func:`atomic_path` would replace such a node
    (as root, ``/dev/full`` itself), so every output is checked before anything is written."""
    try:
        st = os.lstat(path)
    except OSError:
        return  # not there yet (or unreachable: the write will say why)
    if stat.S_ISREG(st.st_mode):
        return
    if stat.S_ISLNK(st.st_mode):
        kind = "a symbolic link (its target is not followed)"
    elif stat.S_ISDIR(st.st_mode):
        kind = "a directory"
    elif stat.S_ISFIFO(st.st_mode):
        kind = "a FIFO"
    elif stat.S_ISSOCK(st.st_mode):
        kind = "a socket"
    else:
        kind = "a device"
    raise ElmoError(f"{path}: is {kind}, not a regular file; write to a regular file path")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temp path beside ``path``: published over ``path`` when the block succeeds, else removed.

    Whatever happens inside the block (an error, Ctrl-C), no half-written file
    is ever left under the final name, and what is renamed is on the disk.
    An existing ``path`` that is not a regular file, or a missing folder, is refused
    first (:func:`check_regular_output`; ElmoError).
    """
    path = Path(path)
    check_regular_output(path)
    if not path.parent.is_dir():
        raise ElmoError(f"{path}: directory {path.parent} does not exist")
    tmp = partial_path(path)
    try:
        yield tmp
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_text(path: Path, error: type[ElmoError], what: str, encoding: str = "utf-8") -> str:
    """The text of ``path``; ``error`` when it is absent (``{path}: no such {what}``) or
    unreadable or not in ``encoding`` (``{path}: cannot read the {what} (...)``)."""
    try:
        return path.read_text(encoding=encoding)
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{path}: cannot read the {what} ({e})") from None


class RepeatedKeyError(ValueError):
    """A JSON object holds ``key`` twice (:func:`unique_keys`)."""

    def __init__(self, key: str):
        super().__init__(f"the key {json.dumps(key)} is repeated in one object")
        self.key = key


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for :func:`json.loads`: the object as a dict, RepeatedKeyError
    for a key given twice (plain ``json.loads`` keeps the last one without a word)."""
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise RepeatedKeyError(key)
            seen.add(key)
    return data


def read_json(path: Path, error: type[ElmoError], what: str, encoding: str = "utf-8-sig",
              once: bool = False) -> Any:
    """The JSON value in ``path``; ``error`` as :func:`read_text` does, and naming the line
    when the text is not JSON. A UTF-8 byte-order mark (files saved on Windows) is skipped.
    ``once``: a key repeated in an object is ``error`` naming it (else the last one counts)."""
    text = read_text(path, error, what, encoding)
    try:
        return json.loads(text, object_pairs_hook=unique_keys if once else None)
    except json.JSONDecodeError as e:
        raise error(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    except RepeatedKeyError as e:
        raise error(f"{path}: {e}; keep one") from None
    except RecursionError:
        raise error(f"{path}: JSON nested too deeply to read") from None


def format_mib(size: int) -> str:
    """A size in bytes as every command prints one: ``"11.5 MiB"`` (2**20 bytes)."""
    return f"{size / 2**20:.1f} MiB"


def check_not_an_input(output: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> None:
    """ElmoError if ``output`` is one of ``inputs`` (same path, a symlink or a hard link).

    An input "-" is stdin: the file redirected into it (``< corpus.txt``) is compared
    too (device and inode of file descriptor 0). URLs are never the same file; an
    ``output`` that does not exist yet is none.
    """
    try:
        out = os.stat(output)
    except OSError:
        return  # not there yet: it cannot be an input
    for path in inputs:
        if "://" in str(path):
            continue
        try:
            same = os.path.samestat(out, os.fstat(0) if str(path) == "-" else os.stat(path))
        except OSError:
            continue
        if same:
            what = "the file on stdin" if str(path) == "-" else f"the input {path}"
            raise ElmoError(
                f"{output}: is {what} (the same file); choose another output, "
                "nothing was written"
            )


def check_output(
    output: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), overwrite: bool = False
) -> None:
    """The one output rule of every command that writes a file; call it before anything
    is loaded or written.

    Refused with an ElmoError: an ``output`` that is one of ``inputs`` (stdin's file
    included, :func:`check_not_an_input`; ``overwrite`` does not change that), one
    that is not a regular file (:func:`check_regular_output`), and an
    existing file unless ``overwrite``. Temp files that killed runs left beside
    ``output`` are removed (:func:`sweep_partials`).
    """
    check_not_an_input(output, inputs)
    check_regular_output(output)
    if not overwrite and os.path.lexists(output):
        raise ElmoError(f"{output}: exists; pass --overwrite to replace it (nothing was written)")
    sweep_partials(output)


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (of any user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process (or not a PID we can ask about): keep its file
    return True


def stale_partials(output: str | os.PathLike) -> list[Path]:
    """The temp files of :func:`atomic_path` beside ``output`` whose process is gone
    (``.{name}.partial-{pid}`` with no process ``pid``; this process's own never)."""
    path = Path(output)
    prefix = f".{path.name}{PARTIAL}"
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return []
    stale = []
    for entry in entries:
        pid = entry.name[len(prefix):]
        if entry.name.startswith(prefix) and pid.isdigit() and int(pid) != os.getpid() \
                and not _alive(int(pid)):
            stale.append(entry)
    return stale


def sweep_partials(output: str | os.PathLike) -> list[Path]:
    """Remove :func:`stale_partials` of ``output``; one warning names what was removed
    (and, for a file that could not be removed, the command that removes it)."""
    removed, size, kept = [], 0, []
    for entry in stale_partials(output):
        try:
            st = entry.lstat()
            if stat.S_ISDIR(st.st_mode):
                kept.append(entry)  # a staging directory: never removed by a sweep
                continue
            entry.unlink()
        except OSError:
            kept.append(entry)
            continue
        removed.append(entry)
        size += st.st_size
    if removed:
        warnings.warn(
            f"removed {len(removed)} temp file(s) of killed runs beside {output} "
            f"({format_mib(size)}: {', '.join(p.name for p in removed)})",
            UserWarning, stacklevel=2)
    if kept:
        names = " ".join(shlex.quote(str(p)) for p in kept)
        warnings.warn(f"temp files of killed runs beside {output} remain; remove them with: "
                      f"rm -r {names}", UserWarning, stacklevel=2)
    return removed
