"""Whom the user cache trusts: the current user (and root), nobody else.

The cache holds models onnxruntime runs and the hashes that vouch for them, so
(as ssh's StrictModes checks) :func:`trusted_cache_root` accepts a cache root
only when it and every folder above it, up to the user's home (included) or
else ``/``, are real folders owned by the user (or root) and not writable by
group or others; a root-owned sticky folder above the root, such as ``/tmp``,
may be passed through (nobody else can rename what the user owns in it). A
root-owned folder does not end the walk: for a process running as root, every
folder is root's. Inside the
cache nothing is followed through a symlink (:func:`private_dir`,
:func:`owned_dir`, :func:`owned_file`, :func:`read_owned`, :func:`remove_tree`), and a per-cache
secret (``<cache>/secret``, 0600) signs what the cache vouches for
(:func:`seal`): a copy or hash filed by anyone without it is not believed.

Every cache user goes through here: the hash memo (:mod:`.hashes`), prepared
copies (:mod:`.prepared`), drop-in conversions (:mod:`elmo_runtime.compat.converted`)
and pulled models (:mod:`elmo_runtime.compat.pull`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ElmoError

ENV_CACHE = "ELMO_EDGE_CACHE"
SECRET = "secret"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class UntrustedCache(ElmoError):
    """A cache folder or file that someone other than the user (or root) owns or may write."""


def _uid() -> int | None:
    return os.getuid() if hasattr(os, "getuid") else None


def _owner_ok(st: os.stat_result) -> bool:
    uid = _uid()
    return uid is None or st.st_uid in (uid, 0)


def _who(st: os.stat_result) -> str:
    try:
        import pwd

        return f"{pwd.getpwuid(st.st_uid).pw_name} (uid {st.st_uid})"
    except (ImportError, KeyError):
        return f"uid {st.st_uid}"


def _check_folder(path: Path, st: os.stat_result, passable: bool = False) -> None:
    """Raise UntrustedCache unless ``path`` (its ``lstat``) is a folder the user can trust.

    ``passable``: a root-owned sticky folder (``/tmp``) above the cache is accepted.
    """
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UntrustedCache(f"{path}: a cache folder must be a folder, not a link or a file")
    if not _owner_ok(st):
        raise UntrustedCache(f"{path}: the cache folder belongs to another user, {_who(st)}")
    if _uid() is not None and st.st_mode & 0o022:
        if passable and st.st_uid == 0 and st.st_mode & stat.S_ISVTX:
            return
        raise UntrustedCache(f"{path}: the cache folder is writable by others or its group "
                             f"(mode {st.st_mode & 0o7777:o})")


def cache_root() -> Path:
    """The elmo-edge cache directory (``$ELMO_EDGE_CACHE``, XDG cache, or ``~/.cache``),
    unchecked: :func:`trusted_cache_root` is what the cache's users call."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "elmo-edge"


def trusted_cache_root(root: Path | None = None, create: bool = True) -> Path:
    """The cache root (default :func:`cache_root`), symlinks resolved, once checked.

    ``create``: missing folders are made, each 0700; otherwise a missing root is
    returned unchecked (it holds nothing). Raises UntrustedCache (one line: which
    folder, whose, what mode; set ``ELMO_EDGE_CACHE`` to a folder of your own) when
    the root or a folder above it is not the user's; OSError when it cannot be made.
    """
    root = Path(os.path.abspath(cache_root() if root is None else root))
    if create:
        missing = []
        probe = root
        while not os.path.lexists(probe) and probe != probe.parent:
            missing.append(probe)
            probe = probe.parent
        for folder in reversed(missing):
            with contextlib.suppress(FileExistsError):
                os.mkdir(folder, 0o700)
    elif not os.path.lexists(root):
        return root
    real = Path(os.path.realpath(root))
    if _uid() is None:
        return real
    home = os.path.realpath(Path.home())
    try:
        path = real
        while True:
            st = os.lstat(path)
            _check_folder(path, st, passable=path != real)
            if str(path) == home or path == path.parent:
                return real
            path = path.parent
    except UntrustedCache as e:
        raise UntrustedCache(f"{e}; the cache {real} is not used (set ELMO_EDGE_CACHE to a "
                             "folder of your own)") from None


def private_dir(path: Path) -> Path:
    """``path`` made (0700) or found: a real folder of the user's, not writable by others.

    Raises UntrustedCache otherwise (a link, a file, another user's, group/other-writable).
    """
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    owned_dir(path)
    return path


def owned_dir(path: Path) -> None:
    """Raise UntrustedCache unless ``path`` is a real folder of the user's, not writable by
    others (OSError when it is missing); nothing is made."""
    _check_folder(path, os.lstat(path))


def owned_file(path: Path) -> os.stat_result:
    """``lstat`` of ``path`` when it is a regular file of the user's (or root's), not a link.

    Raises UntrustedCache for a link, a non-file or another user's file; OSError when missing.
    """
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise UntrustedCache(f"{path}: not a regular file (a link or something else)")
    if not _owner_ok(st):
        raise UntrustedCache(f"{path}: belongs to another user, {_who(st)}")
    return st


def read_owned(path: Path, limit: int = 1 << 20) -> bytes:
    """The bytes of a small cache file, opened without following a link (O_NOFOLLOW).

    Raises UntrustedCache (a link, another user's, over ``limit`` bytes), OSError.
    """
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _owner_ok(st):
            raise UntrustedCache(f"{path}: not a regular file of this user's")
        if st.st_size > limit:
            raise UntrustedCache(f"{path}: {st.st_size} bytes, a cache record has at most {limit}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(limit + 1)
    finally:
        os.close(fd)


def remove_tree(path: Path) -> bool:
    """Delete the real folder ``path`` and what is in it; links inside are unlinked, never
    followed (``shutil.rmtree`` works through file descriptors here). A link, a file or a
    missing ``path`` is left alone: returns False. Errors inside are ignored."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return False
    except OSError:
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True


def _secret(root: Path) -> bytes:
    """The cache's 32-byte secret, made on first use (0600, never through a link).

    Raises UntrustedCache for a secret others may read or write; OSError.
    """
    path = root / SECRET
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    key = read_owned(path, limit=64)
    if _uid() is not None and os.lstat(path).st_mode & 0o077:
        raise UntrustedCache(f"{path}: the cache's secret is open to others (chmod 600 it)")
    if len(key) != 32:
        raise UntrustedCache(f"{path}: the cache's secret is not 32 bytes")
    return key


def seal(root: Path, record: dict[str, Any]) -> str:
    """Hex HMAC-SHA256 of ``record`` (canonical JSON) under the cache's secret.

    What the cache vouches for (a prepared copy's manifest, a remembered hash)
    carries it; a record filed by anyone without the secret does not match.
    Raises UntrustedCache, OSError (no secret can be read or made).
    """
    text = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(_secret(root), text, hashlib.sha256).hexdigest()


def sealed(root: Path, record: dict[str, Any], mac: object) -> bool:
    """True when ``mac`` is :func:`seal` of ``record`` (False when the secret is unreadable)."""
    try:
        return isinstance(mac, str) and hmac.compare_digest(seal(root, record), mac)
    except (OSError, UntrustedCache):
        return False


def open_lock(path: Path) -> int:
    """A descriptor of the lock file ``path``, made 0600, never through a link (OSError)."""
    return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the lock file ``path`` (made 0600, never through a link),
    held for the ``with`` block; no lock where fcntl is missing (a rename decides then).
    Raises OSError when the lock file cannot be opened."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fd = open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
