"""``elmo pull NAME``: download a published model, verify it, convert it once.

Each file of :func:`~elmo_runtime.models.published.get_published` ``(NAME)`` is fetched
into ``<cache>/pulled/<NAME>/`` (:mod:`elmo_runtime.loading.pulled`) with the standard
library's :mod:`urllib` (no dependency added to the runtime's four; a model is two plain
GETs), then converted as the drop-ins convert (:func:`.converted.converted_model`), and
``model.onnx`` is linked beside the files: ``--model NAME``, ``ElmoEmbedder(NAME)`` and
``ElmoModel().load(NAME)`` use it.

* **Only https** (and plain http to this machine, for a local mirror) is fetched, redirects
  included. ``$ELMO_EDGE_MODEL_MIRROR`` (e.g. ``http://127.0.0.1:8000``) replaces every
  URL's scheme and host by ``MIRROR/<host>``: ``https://h/p`` is fetched as
  ``MIRROR/h/p``. A file whose owner documents only a plain-http URL (NLPL's,
  ``http_url``) is asked for over https; when that fails the error names the http URL,
  to download by hand and ``elmo convert``.
* **Resume**: bytes go to ``.<file>.part`` (a stable name); an interrupted or killed pull
  leaves it, and the next pull asks for the rest (HTTP ``Range``; a server that answers 200
  instead sends it all again). Nothing appears under a final name before it is verified.
* **Verify**: the size the server declared and the registry's size where published; the
  sha256 and md5 where published; and the sha256 and size recorded at the first download
  of that URL (``<cache>/pulled/trust/``), so a file that changes later is refused. A
  file that fails is deleted (the next pull starts over) and the error names what differed.
  When the files downloaded now do not convert, they and the first-download records written
  now are deleted too (the error says so), so a bad download never sticks.
* **Progress**: one line per tenth of each file on stderr (``\\r``-updated on a terminal).

Concurrent pulls of one name wait on a lock. The cache must be the user's
(:func:`elmo_runtime.loading.trust.trusted_cache_root`), else the pull stops with one line
(UntrustedCache: which folder, whose, what mode); files, records and folders in it that are
links or another user's are not used.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import ElmoError, first_line
from ..files import write_text_atomic
from ..loading.pulled import MODEL, PULLED, pulled_dir
from ..loading.trust import (
    UntrustedCache,
    locked,
    owned_file,
    private_dir,
    read_owned,
    trusted_cache_root,
)
from ..models.published import PublishedFile, PublishedModel, get_published
from ..version import __version__
from .converted import converted_model, is_ready
from .sources import Source, locate

ENV_MIRROR = "ELMO_EDGE_MODEL_MIRROR"
LOOPBACK = ("127.0.0.1", "::1", "localhost")
CHUNK = 1 << 20
TIMEOUT_S = 60
MAX_BYTES = 16 * 2**30  # the largest published ELMo ZIP is ~1.5 GB
PULLED_JSON = "pulled.json"
TRUST = "trust"

Progress = Callable[[str, int, int | None], None]


class PullError(ElmoError):
    """A download that failed, was refused, or does not match what was expected."""


def check_url(url: str) -> str:
    """``url`` if it may be fetched (https, or http to this machine), else PullError."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and parts.hostname in LOOPBACK:
        return url
    raise PullError(f"{url}: refused: only https URLs are fetched (and http to this machine, "
                    f"for a local {ENV_MIRROR})")


def mirrored(url: str) -> str:
    """``url`` through ``$ELMO_EDGE_MODEL_MIRROR`` when it is set (see the module doc)."""
    mirror = os.environ.get(ENV_MIRROR)
    if not mirror:
        return url
    parts = urlsplit(url)
    return f"{mirror.rstrip('/')}/{parts.hostname}{parts.path}"


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a URL :func:`check_url` accepts."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        check_url(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_CheckedRedirects)


def terminal_progress(label: str, done: int, total: int | None) -> None:
    """Progress on stderr: a line per tenth of the file (``\\r``-updated on a terminal)."""
    mib = f"{done / 2**20:,.1f}"
    text = (f"{label}: {mib} of {total / 2**20:,.1f} MiB ({100 * done // max(total, 1)}%)"
            if total else f"{label}: {mib} MiB")
    if sys.stderr.isatty():
        end = "\n" if total is not None and done >= total else ""
        print(f"\r{text}", end=end, file=sys.stderr, flush=True)
        return
    step = (10 * done // total) if total else done // (100 * 2**20)
    if step != getattr(terminal_progress, "_last", None) or (total and done >= total):
        terminal_progress._last = step  # type: ignore[attr-defined]
        print(text, file=sys.stderr, flush=True)


def _content_range(value: str | None, have: int, url: str) -> int | None:
    """The total size in ``Content-Range: bytes START-END/TOTAL``; PullError unless
    START is ``have`` (the server resumed where we stopped)."""
    try:
        unit, _, rest = (value or "").partition(" ")
        span, _, total = rest.partition("/")
        start = int(span.partition("-")[0])
        size = None if total in ("*", "") else int(total)
    except ValueError:
        raise PullError(f"{url}: the server's Content-Range {value!r} is not bytes "
                        "START-END/TOTAL") from None
    if unit != "bytes" or start != have:
        raise PullError(f"{url}: the server resumed at {value!r}, not at byte {have}")
    return size


def _fetch(url: str, part: Path, label: str, progress: Progress,
           expected: int | None = None) -> int | None:
    """Append the rest of ``url`` to ``part`` (Range from its size); the total size the
    server declared (None if it did not). PullError (part kept) on a broken transfer;
    PullError (part deleted) before any byte is read when the declared size is not
    ``expected`` (the published size)."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"elmo-edge/{__version__}"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(check_url(url), headers=headers)
    try:
        response = _OPENER.open(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # asked past the end: the part is complete (or wrong)
            return have
        raise PullError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise PullError(f"{url}: cannot download ({reason})") from None
    with response:
        if response.status == 206:
            total = _content_range(response.headers.get("Content-Range"), have, url)
            mode = "ab"
        else:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            have, mode = 0, "wb"
        if total is not None and expected is not None and total != expected:
            part.unlink(missing_ok=True)
            raise PullError(f"{url}: {total} bytes declared by the server differs from the "
                            f"published size ({expected}); nothing was installed")
        if total is not None and total > MAX_BYTES:
            raise PullError(f"{url}: {total:,} bytes declared, more than the "
                            f"{MAX_BYTES // 2**30} GiB a model may have; refused")
        progress(label, have, total)
        try:
            with open(part, mode) as f:
                while chunk := response.read1(CHUNK):
                    have += len(chunk)
                    if have > (total if total is not None else MAX_BYTES):
                        raise PullError(f"{url}: the server sent more than the "
                                        f"{total if total is not None else MAX_BYTES:,} "
                                        "bytes it declared; refused")
                    f.write(chunk)
                    progress(label, have, total)
        except (OSError, http.client.HTTPException) as e:
            raise PullError(f"{url}: download interrupted at {have:,} bytes ({e}); run "
                            "`elmo pull` again to resume") from None
    if total is not None and have < total:
        raise PullError(f"{url}: download interrupted at {have:,} of {total:,} bytes; run "
                        "`elmo pull` again to resume")
    return total


def _digests(path: Path) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            sha.update(block)
            md5.update(block)
    return sha.hexdigest(), md5.hexdigest()


def _trust_file(root: Path, url: str) -> Path:
    return root / PULLED / TRUST / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".json")


def _verify(spec: PublishedFile, url: str, part: Path, declared: int | None,
            root: Path) -> tuple[dict[str, object], Path | None]:
    """Check ``part`` against the registry, the server's size and the first download of
    ``url``; PullError (``part`` deleted) on any difference. Returns the file's record and
    the first-download record written now (None when there was one already)."""
    size = part.stat().st_size
    sha256, md5 = _digests(part)
    trust = _trust_file(root, url)
    try:
        first = json.loads(read_owned(trust))
    except (OSError, ValueError, UntrustedCache):
        first = None
    checks = [("the size the server declared", declared, size),
              ("the published size", spec.size_bytes, size),
              ("the published sha256", spec.sha256, sha256),
              ("the published md5", spec.md5, md5)]
    if isinstance(first, dict):
        checks += [("the size of its first download", first.get("size"), size),
                   ("the sha256 of its first download", first.get("sha256"), sha256)]
    for what, expected, got in checks:
        if expected is not None and expected != got:
            part.unlink(missing_ok=True)
            raise PullError(f"{url}: {got} differs from {what} ({expected}); the file was "
                            "deleted, nothing was installed")
    record = {"url": url, "size": size, "sha256": sha256}
    if first is not None:
        return record, None
    private_dir(trust.parent)
    write_text_atomic(trust, json.dumps(record, indent=1))
    return record, trust


def _download(spec: PublishedFile, folder: Path, label: str, root: Path,
              progress: Progress) -> tuple[dict[str, object], Path | None]:
    """``folder/spec.filename`` from the first URL that answers; its record and the
    first-download record written now (see :func:`_verify`)."""
    target = folder / spec.filename
    part = folder / f".{spec.filename}.part"
    errors = []
    for url in spec.urls:
        try:
            declared = _fetch(mirrored(url), part, label, progress, spec.size_bytes)
        except PullError as e:
            errors.append(str(e))
            if "published size" in str(e) or (part.exists() and part.stat().st_size):
                raise  # a wrong file, or one to resume: not another mirror's business
            continue
        record, trust = _verify(spec, url, part, declared, root)
        os.replace(part, target)
        return record, trust
    if spec.http_url:  # the owner documents plain http only: the way left is by hand
        errors.append(f"its owner documents {spec.http_url}, which elmo pull does not fetch "
                      "(plain http): download it yourself and elmo convert it")
    raise PullError("; ".join(dict.fromkeys(errors)))  # each distinct reason once


def pull(name: str, root: Path | None = None, progress: Progress = terminal_progress) -> Path:
    """Download, verify and convert the published model ``name``; its ``model.onnx``.

    A model pulled before is returned at once. Raises ModelError for an unknown name,
    PullError for a refused, failed or mismatching download. A failed conversion is an
    ElmoError; the files this pull downloaded (and the first-download records it wrote)
    are deleted first, so the next pull downloads them again, while files kept from an
    earlier, unfinished pull stay (the next pull converts them again).
    """
    model = get_published(name)
    root = trusted_cache_root(None if root is None else Path(root))
    private_dir(root / PULLED)
    folder = pulled_dir(name, root)
    with locked(root / PULLED / f"{name}.lock"):
        private_dir(folder)
        if is_ready(folder / MODEL) and is_ready(folder / PULLED_JSON):
            return folder / MODEL
        records = []
        fresh: list[Path] = []  # files and first-download records this pull wrote
        for spec in model.files:
            target = folder / spec.filename
            label = f"{name} {spec.filename}"
            if _owned(target):  # downloaded and verified by an earlier, unfinished pull
                records.append({"file": spec.filename, "size": target.stat().st_size})
                continue
            record, trust = _download(spec, folder, label, root, progress)
            records.append({"file": spec.filename, **record})
            fresh += [target] if trust is None else [target, trust]
        try:
            converted = converted_model(_source(model, folder), root)
        except ElmoError as e:
            if not fresh:
                raise
            for path in fresh:
                path.unlink(missing_ok=True)
            raise PullError(f"{first_line(e)}; the files downloaded now were deleted (and their "
                            f"first-download records): `elmo pull {name}` downloads them "
                            "again") from None
        _link(converted, folder / MODEL)
        write_text_atomic(folder / PULLED_JSON, json.dumps(
            {"name": name, "files": records, "converted": str(converted),
             "pulled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1))
    return folder / MODEL


def _owned(path: Path) -> bool:
    try:
        owned_file(path)
    except (OSError, UntrustedCache):
        return False
    return True


def _source(model: PublishedModel, folder: Path) -> Source:
    if model.format == "zip":
        return locate(folder / "model.zip")
    return locate(folder / "options.json", folder / "weights.hdf5")


def _link(source: Path, target: Path) -> None:
    """``target`` becomes ``source``'s content: a hard link (a copy across file systems),
    put in place atomically."""
    tmp = target.with_name(f".{target.name}.link-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)
