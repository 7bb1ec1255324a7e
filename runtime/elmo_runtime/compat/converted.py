"""Published models converted on first use, kept in the user cache and shared.

``<cache>/converted/<key>/model.onnx`` (cache: :func:`elmo_runtime.loading.hashes.cache_root`),
``key`` = sha256 of the source's files (the ZIP, or options.json and the weights) and of the
model format, so an edited file or a newer format converts again and an unchanged one is
reused on the next start, by any process. The conversion is ``elmo convert`` in a child
process (the runtime imports nothing of the export side; the child's peak memory leaves
with it), writing into a temporary folder beside the final one; the folder is renamed into
place when complete, under an exclusive ``flock`` per key, so concurrent first uses convert
once and nobody sees half a model. The cache must be the user's
(:func:`elmo_runtime.loading.trust.trusted_cache_root`: a model there is code onnxruntime
runs); otherwise nothing is converted into it or read from it: an UntrustedCache error
(one line: which folder, whose, what mode) says to set ``ELMO_EDGE_CACHE`` to a folder of
the user's own. A converted model, its folder and ``converted/`` must be the user's and no
links, else it is converted again (a link is never followed or deleted).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import CONVERT_HINT, ElmoError
from ..format import contract
from ..loading.hashes import model_sha256
from ..loading.trust import (
    UntrustedCache,
    locked,
    owned_dir,
    owned_file,
    private_dir,
    remove_tree,
    trusted_cache_root,
)
from .sources import Source, extract, locate

MODEL = "model.onnx"
SOURCE_JSON = "source.json"


def cache_key(source: Source, root: Path) -> str:
    """sha256 (hex) of the source files' sha256s and the model format version."""
    h = hashlib.sha256(f"elmo-edge format {contract.FORMAT_VERSION}\n".encode())
    for path in source.files:
        h.update(f"{model_sha256(path, root)}\n".encode())
    if source.archive is not None:
        h.update(f"{source.options}\n{source.weights}\n".encode())
    return h.hexdigest()


def converted_model(source: Source, root: Path | None = None) -> Path:
    """The elmo-edge model converted from ``source``: cached, else converted now (once).

    Raises UntrustedCache (an ElmoError) when the cache is not the user's, ElmoError when
    the conversion fails (the child's one-line error, e.g. an option the converter refuses
    by name).
    """
    root = trusted_cache_root(None if root is None else Path(root))
    converted = private_dir(root / "converted")
    key = cache_key(source, root)
    final = converted / key
    if is_ready(final / MODEL):
        return final / MODEL
    with locked(converted / f"{key}.lock"):
        if is_ready(final / MODEL):  # another process converted it while we waited
            return final / MODEL
        for dead in converted.glob(f".{key[:16]}.*"):  # a killed converter's (lock held)
            remove_tree(dead)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:16]}.", dir=converted))
        try:
            options, weights = extract(source, tmp)
            _convert(options, weights, tmp / MODEL, source)
            for name in os.listdir(tmp):  # extracted members are not kept
                if name != MODEL:
                    (tmp / name).unlink()
            (tmp / SOURCE_JSON).write_text(json.dumps(
                {"options": source.options, "weights": source.weights,
                 "archive": None if source.archive is None else str(source.archive)}, indent=1))
            # a folder left without its model, or a link or file in its place (unlinked,
            # never followed)
            if os.path.lexists(final) and not remove_tree(final):
                os.unlink(final)
            os.rename(tmp, final)
        finally:
            remove_tree(tmp)
    return final / MODEL


def is_ready(model: Path) -> bool:
    """True when ``model`` is a regular file of the user's in a folder of the user's (no
    links); what another user or a link put there is not used."""
    try:
        owned_dir(model.parent)
        owned_file(model)
    except (OSError, UntrustedCache):
        return False
    return True


def _convert(options: Path, weights: Path, output: Path, source: Source) -> None:
    """``elmo convert`` in a child process; its progress goes to our stderr."""
    print(f"elmo-edge: converting {source.describe()} to ONNX (once; cached for the next "
          "start) …", file=sys.stderr, flush=True)
    cmd = [sys.executable, "-m", "elmo_runtime", "convert", str(options), str(weights),
           "-o", str(output)]
    result = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            errors="replace")
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    if result.returncode != 0 or not output.is_file():
        error = next((ln for ln in reversed(lines) if ln.startswith("Error: ")), None)
        if error is None:
            error = lines[-1] if lines else f"exit status {result.returncode}"
            if "No module named" in error or "h5py" in error:
                error += f" ({CONVERT_HINT})"
        if source.archive is not None:  # name the ZIP's members, not their deleted copies
            error = (error.replace(str(options), source.options)
                     .replace(str(weights), source.weights))
        raise ElmoError(f"{source.describe()}: conversion failed: {error.removeprefix('Error: ')}")
    if lines:  # "wrote TMP (size); max |ONNX − float64 reference| = …"
        print(f"elmo-edge: converted; {lines[-1].partition('; ')[2]}", file=sys.stderr,
              flush=True)


def model_for(model: str | os.PathLike, weights: str | os.PathLike | None = None) -> Path:
    """The elmo-edge model for what a drop-in was given: an ``.onnx`` file as it is, the
    name of a bundled model (``default``, ``default-int8``) or of a published model pulled
    before (``elmo pull NAME``), else a published model's files (pair, folder or ZIP:
    :func:`~.sources.locate`) converted once."""
    if weights is None and str(model).endswith(".onnx"):
        return Path(model)
    if weights is None and isinstance(model, str) and not Path(model).exists():
        from ..loading.model_file import resolve_model
        from ..models import names
        from ..models.published import published_names

        if model in names() or model in published_names():
            return resolve_model(model)
    return converted_model(locate(model, weights))
