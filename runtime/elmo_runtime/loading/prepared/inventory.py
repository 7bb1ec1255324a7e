"""What the prepared-model cache holds: list the copies, delete them (`elmo cache`).

The copies themselves are made, checked and found by :mod:`.cache`.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import warnings
from pathlib import Path
from typing import Any

from ..hashes import INDEX, cache_root, file_stamp, model_sha256
from .cache import copy_key


def list_copies(root: Path | None = None) -> list[dict[str, Any]]:
    """The prepared copies in the cache, largest first.

    Each is a dict: ``dir`` (Path), ``sha256`` (of the model it was made
    from), ``key`` (recipe, onnxruntime version, CPU), ``bytes`` on disk,
    ``models`` (paths whose file still has that sha256 as far as size, mtime,
    ctime and inode tell), ``changed`` (paths that had it when they were
    hashed but are gone or were rewritten since) and ``current`` (False when
    the key is not this machine's: such a copy is never used here). Unreadable
    index entries and files that vanish meanwhile (a concurrent clear or
    build) are skipped; builders' temporaries are not copies.
    """
    root = cache_root() if root is None else root
    paths: dict[str, list[str]] = {}
    changed: dict[str, list[str]] = {}
    for entry in (root / INDEX).glob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
            known = json.loads(entry.read_text(encoding="utf-8"))
            sha, path, stamp = str(known["sha256"]), str(known["path"]), known.get("stamp")
            try:
                now = file_stamp(Path(path))
            except OSError:
                now = None
            (paths if now == stamp else changed).setdefault(sha, []).append(path)
    key, found = copy_key(), []
    for directory in sorted((root / "prepared").glob("*/*")):
        if directory.name.startswith(".tmp-") or not directory.is_dir():
            continue
        size = 0
        with contextlib.suppress(OSError):  # removed meanwhile: what is left is counted
            for f in directory.iterdir():
                with contextlib.suppress(OSError):
                    size += f.stat().st_size if f.is_file() else 0
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
    hashed, when there is nothing to clear. Returns (copies removed, bytes freed).
    """
    root = cache_root() if root is None else root
    if not (root / "prepared").is_dir():
        if model is None:
            shutil.rmtree(root / INDEX, ignore_errors=True)
        return 0, 0
    copies = list_copies(root)
    if model is None:
        shas = {d.name for d in (root / "prepared").iterdir() if d.is_dir()}
    else:
        model = Path(model)
        shas = {c["sha256"] for c in copies if str(model.resolve()) in c["changed"]}
        shas.add(model_sha256(model, root))
    removed: list[dict[str, Any]] = []
    for sha in sorted(shas):
        directory = root / "prepared" / sha
        # OSError: no copy of that model, or its directory removed meanwhile
        with contextlib.suppress(OSError), open(directory / ".lock", "a+b") as lock:
            try:
                import fcntl

                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except ImportError:
                pass
            except OSError:
                warnings.warn(f"{directory}: a copy is being made there now (another process "
                              "holds its lock); left as it is", UserWarning, stacklevel=2)
                continue
            removed += [c for c in copies if c["sha256"] == sha]
            for item in directory.iterdir():
                if item.name != ".lock":
                    shutil.rmtree(item, ignore_errors=True)
            if model is None:
                shutil.rmtree(directory, ignore_errors=True)
    if model is None:
        with contextlib.suppress(OSError):  # left: a build in progress
            (root / "prepared").rmdir()
        shutil.rmtree(root / INDEX, ignore_errors=True)
    return len(removed), sum(c["bytes"] for c in removed)
