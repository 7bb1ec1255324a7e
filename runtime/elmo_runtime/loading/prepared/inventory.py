"""What the prepared-model cache holds: list the copies, delete them (`elmo cache`).

The copies themselves are made, checked and found by :mod:`.cache`. Only what the
cache made is listed or deleted, by name (``prepared/<sha256>/<key>``, the
``index/*.json`` entries), and nothing is followed through a link: a link put
in the cache stays, and so does what it points to. A cache that is not the
user's (:func:`..trust.trusted_cache_root`) is neither listed nor cleared
(UntrustedCache).
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

from ..hashes import INDEX, file_stamp, model_sha256
from ..trust import (
    UntrustedCache,
    open_lock,
    owned_dir,
    read_owned,
    remove_tree,
    trusted_cache_root,
)
from .cache import KEY_NAME, copy_key, model_dirs


def list_copies(root: Path | None = None) -> list[dict[str, Any]]:
    """The prepared copies in the cache, largest first.

    Each is a dict: ``dir`` (Path), ``sha256`` (of the model it was made
    from), ``key`` (recipe, onnxruntime version, CPU), ``bytes`` on disk,
    ``models`` (paths whose file still has that sha256 as far as size, mtime,
    ctime and inode tell), ``changed`` (paths that had it when they were
    hashed but are gone or were rewritten since) and ``current`` (False when
    the key is not this machine's: such a copy is never used here). Unreadable
    index entries and files that vanish meanwhile (a concurrent clear or
    build) are skipped; builders' temporaries and links are not copies.
    Raises UntrustedCache when the cache is not the user's.
    """
    root = trusted_cache_root(root, create=False)
    paths: dict[str, list[str]] = {}
    changed: dict[str, list[str]] = {}
    for entry in (root / INDEX).glob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError,
                                 UntrustedCache):
            known = json.loads(read_owned(entry))
            sha, path, stamp = str(known["sha256"]), str(known["path"]), known.get("stamp")
            try:
                now = file_stamp(Path(path))
            except OSError:
                now = None
            (paths if now == stamp else changed).setdefault(sha, []).append(path)
    key, found = copy_key(), []
    for directory in sorted(_copy_dirs(root)):
        size = 0
        with contextlib.suppress(OSError):  # removed meanwhile: what is left is counted
            for f in os.scandir(directory):
                with contextlib.suppress(OSError):
                    size += f.stat(follow_symlinks=False).st_size if f.is_file(
                        follow_symlinks=False) else 0
        sha = directory.parent.name
        found.append({"dir": directory, "sha256": sha, "key": directory.name, "bytes": size,
                      "models": sorted(paths.get(sha, [])),
                      "changed": sorted(changed.get(sha, [])), "current": directory.name == key})
    return sorted(found, key=lambda c: -c["bytes"])


def clear(model: str | Path | None = None, root: Path | None = None) -> tuple[int, int]:
    """Delete the prepared copies of ``model``, or every copy and the index (None).

    ``model``'s copies are those of its content now and of the content it
    had when it was last hashed (a model file rewritten since it was
    prepared); its dead builders' temporaries go too. A model's directory is
    emptied under its lock, so no load sees half a copy; one whose lock is
    held (a copy being made right now) is left as it is, with a UserWarning.
    A load that found its copy just before it was deleted falls back to the
    model file with a warning (:func:`elmo_runtime.loading.loaded.open_model`).
    Nothing is written, and no model
    hashed, when there is nothing to clear. Only real folders named as the cache
    names them are deleted, and index entries; a link anywhere in the cache is left,
    with what it points to. Returns (copies removed, bytes freed). Raises
    UntrustedCache when the cache is not the user's.
    """
    root = trusted_cache_root(root, create=False)
    if not _real_dir(root / "prepared"):
        if model is None:
            _clear_index(root)
        return 0, 0
    copies = list_copies(root)
    if model is None:
        shas = {d.name for d in model_dirs(root)}
    else:
        model = Path(model)
        shas = {c["sha256"] for c in copies if str(model.resolve()) in c["changed"]}
        shas.add(model_sha256(model, root))
    removed: list[dict[str, Any]] = []
    for sha in sorted(shas):
        directory = root / "prepared" / sha
        try:  # OSError: no copy of that model, or its directory removed meanwhile
            owned_dir(directory)
            lock = open_lock(directory / ".lock")
        except (OSError, UntrustedCache):
            continue
        try:
            try:
                import fcntl

                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except ImportError:
                pass
            except OSError:
                warnings.warn(f"{directory}: a copy is being made there now (another process "
                              "holds its lock); left as it is", UserWarning, stacklevel=2)
                continue
            removed += [c for c in copies if c["sha256"] == sha]
            with contextlib.suppress(OSError):
                for item in os.scandir(directory):
                    if KEY_NAME.fullmatch(item.name) or item.name.startswith(".tmp-"):
                        remove_tree(Path(item.path))  # a link is left alone
            if model is None:
                with contextlib.suppress(OSError):
                    os.unlink(directory / ".lock")
                    os.rmdir(directory)  # only when nothing else is in it
        finally:
            os.close(lock)
    if model is None:
        with contextlib.suppress(OSError):  # left: a build in progress, or what we did not make
            (root / "prepared").rmdir()
        _clear_index(root)
    return len(removed), sum(c["bytes"] for c in removed)


def _real_dir(path: Path) -> bool:
    try:
        owned_dir(path)
    except (OSError, UntrustedCache):
        return False
    return True


def _copy_dirs(root: Path) -> list[Path]:
    """``prepared/<sha256>/<key>`` folders: real folders, named as the cache names them."""
    found = []
    for parent in model_dirs(root):
        with contextlib.suppress(OSError):
            found += [Path(e.path) for e in os.scandir(parent)
                      if KEY_NAME.fullmatch(e.name) and e.is_dir(follow_symlinks=False)]
    return found


def _clear_index(root: Path) -> None:
    """Delete the hash memo's entries (``index/*.json``, no link followed), then the folder."""
    index = root / INDEX
    if not _real_dir(index):
        return
    with contextlib.suppress(OSError):
        for entry in os.scandir(index):
            if entry.name.endswith(".json") and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
        index.rmdir()
