"""The prepared copy's cache: a per-machine copy whose pre-packed weights are memory-mapped.

onnxruntime re-packs every MatMul/Gemm weight for the CPU's kernels (MLAS)
when a session loads, and keeps the packed copy on the heap next to the
original tensor: a model costs about twice its bytes. A *prepared* copy is
the graph onnxruntime has already optimized, written with its weights *and*
their pre-packed forms in an external data file
(``session.save_external_prepacked_constant_initializers``); loading it
memory-maps that file, so the weights are neither on the heap nor held twice.
Before that, :mod:`.graph` rewrites the graph so that
onnxruntime holds nothing twice (weights of ``Scan`` bodies, biased projections).

Where: a user cache (``$ELMO_EDGE_CACHE``, else ``$XDG_CACHE_HOME/elmo-edge``,
else ``~/.cache/elmo-edge``), under ``prepared/<sha256 of the model>/<key>``
where the key names the recipe, the onnxruntime version and the CPU's
instruction-set features (packed layouts depend on all three). The .onnx file
stays the one thing a user copies; a copy is made on the first load on a
machine, in a child process (its memory peak is not the caller's), and takes
about twice the model's bytes on disk.

Safety: the cache must be the user's (:func:`..trust.trusted_cache_root`: the
root and the folders above it owned by the user and not writable by others),
else the model loads as it is with one warning; no file or folder in it is
followed through a link. A copy is built in a temporary directory and renamed
into place, one builder at a time per model (``flock``); a concurrent loser of
the rename uses the winner's copy. A manifest records the sha256 of every file
and the model's full sha256, sealed with the cache's secret (:func:`..trust.seal`),
so a copy filed by anyone else (another user, a copied cache) is refused even
when its manifest is self-consistent; the graph file is hashed on every load,
the data file's size, mtime and ctime are compared and 16 sampled blocks
hashed; any difference forces a full hash, and a copy that fails it is
deleted and rebuilt, never used. A copy whose key no longer
matches (new onnxruntime, other CPU) is not found and is rebuilt (older
siblings are removed); making a copy also removes those of model files that
are gone or were rewritten. When the cache cannot be written, or preparing fails,
:func:`load_path` warns and the model loads as is. Models under 32 MiB load
as they are; ``ELMO_EDGE_PREPARED=0`` turns preparing off, ``=always`` turns
it on for every model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from ...errors import ElmoError
from ...files import sha256_file, write_text_atomic
from ..hashes import INDEX, cache_root, model_sha256
from ..session import resolve_provider
from ..trust import (
    UntrustedCache,
    locked,
    owned_dir,
    owned_file,
    private_dir,
    read_owned,
    remove_tree,
    seal,
    sealed,
    trusted_cache_root,
)
from .graph import NOT_A_MODEL

RECIPE = "p3"  # bump when the way a copy is made changes: older copies are then rebuilt
GRAPH, DATA, MANIFEST = "model.onnx", "model.onnx.data", "manifest.json"
MIN_MODEL_BYTES = 32 << 20  # smaller models load as they are (load_path)
SAMPLES, SAMPLE_BYTES = 16, 1 << 16
SHA_NAME = re.compile(r"[0-9a-f]{64}")  # a model's folder: prepared/<sha256>/
KEY_NAME = re.compile(r"p\d+-ort[\w.+-]+-[0-9a-f]{12}")  # a copy's folder (copy_key)
ENV_SWITCH = "ELMO_EDGE_PREPARED"
CHILD = "elmo_runtime.loading.prepared.graph"  # the module run as the child that prepares
# Instruction sets that decide which MLAS kernels, hence packed layouts, run, as NumPy names what
# CPUID (x86) or HWCAP (ARM) tell this process: under qemu-user the emulated CPU, not the host's.
ISA_FEATURES = (
    "SSE3", "SSSE3", "SSE41", "SSE42", "AVX", "AVX2", "FMA3", "F16C", "AVX512F", "AVX512BW",
    "AVX512DQ", "AVX512VL", "AVX512VNNI", "AVX512BF16", "AVX512FP16", "ASIMD", "ASIMDHP",
    "ASIMDDP", "ASIMDFHM", "SVE",
)
# Kernel-deciding flags NumPy does not detect, from /proc/cpuinfo (the host's CPU under
# emulation: used only where it agrees with NumPy on every flag both know, SHARED_FLAGS).
CPUINFO_ONLY = ("amx_tile", "amx_int8", "amx_bf16", "avx_vnni", "i8mm", "sve2", "bf16")
SHARED_FLAGS = {
    "avx": "AVX", "avx2": "AVX2", "fma": "FMA3", "f16c": "F16C", "avx512f": "AVX512F",
    "avx512bw": "AVX512BW", "avx512vl": "AVX512VL", "avx512_vnni": "AVX512VNNI",
    "avx512_bf16": "AVX512BF16", "avx512_fp16": "AVX512FP16", "vaes": "VAES", "gfni": "GFNI",
    "vpclmulqdq": "VPCLMULQDQ", "asimd": "ASIMD", "asimddp": "ASIMDDP", "sve": "SVE",
}


class NotAModel(ElmoError):
    """The file is no elmo-edge model: nothing is cached, the plain load says why."""


class PrepareError(ElmoError):
    """A prepared copy could not be made or read (:func:`load_path` then loads the model as is)."""


def enabled() -> bool:
    """False when ``ELMO_EDGE_PREPARED`` is 0/false/no/off."""
    return _switch() not in ("0", "false", "no", "off")


def _switch() -> str:
    return os.environ.get(ENV_SWITCH, "1").strip().lower()


def cpu_features() -> str:
    """The CPU the kernels will run on: architecture and instruction sets, as this process sees.

    NumPy's runtime detection (CPUID / HWCAP of this process) names the
    :data:`ISA_FEATURES`; /proc/cpuinfo adds :data:`CPUINFO_ONLY` flags (AMX,
    AVX-VNNI, I8MM, …) only when it describes the same CPU. Under qemu-user it
    describes the host (measured: ``qemu-x86_64 -cpu Haswell`` on an AVX-512
    host), so an emulated CPU gets a key of its own.
    """
    seen = _numpy_features()
    flags = _cpuinfo_flags()
    same_cpu = all((flag in flags) == (name in seen) for flag, name in SHARED_FLAGS.items()
                   if name in _numpy_known())
    extra = sorted(flags & set(CPUINFO_ONLY)) if same_cpu else []
    return " ".join([platform.machine().lower() or "unknown",
                     *sorted(seen & set(ISA_FEATURES)), *extra])


def _numpy_known() -> set[str]:
    from numpy._core._multiarray_umath import __cpu_features__

    return set(__cpu_features__)


def _numpy_features() -> set[str]:
    """NumPy's names of the SIMD features this process's CPU reports (CPUID / HWCAP)."""
    from numpy._core._multiarray_umath import __cpu_features__

    return {name for name, on in __cpu_features__.items() if on}


def _cpuinfo_flags() -> set[str]:
    """The first ``flags`` / ``Features`` line of /proc/cpuinfo (empty if unreadable)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8",
                                            errors="replace") as f:
        for line in f:
            if line.startswith(("flags", "Features")):
                return set(line.split(":", 1)[1].split())
    return set()


def copy_key() -> str:
    """Directory name of this machine's copy: recipe, onnxruntime version, CPU features."""
    import onnxruntime as ort

    cpu = hashlib.sha256(cpu_features().encode()).hexdigest()[:12]
    return f"{RECIPE}-ort{ort.__version__}-{cpu}"


def sample_sha256(path: Path) -> str:
    """Hex sha256 of :data:`SAMPLES` blocks spread evenly over the file (first and last too)."""
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    last = max(0, size - SAMPLE_BYTES)
    with open(path, "rb") as f:
        for i in range(SAMPLES):
            f.seek(last * i // (SAMPLES - 1))
            h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()


def copy_dir(model: str | Path, root: Path | None = None) -> Path:
    """Where this machine's prepared copy of ``model`` lives (made or not)."""
    root = Path(os.path.realpath(cache_root() if root is None else root))
    return root / "prepared" / model_sha256(Path(model), root) / copy_key()


def _sealed_part(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a manifest's seal covers: the model's sha256, the key, each file's sha256 and size."""
    files = manifest.get("files", {})
    return {"source_sha256": manifest.get("source_sha256"), "key": manifest.get("key"),
            "files": {GRAPH: {"sha256": files.get(GRAPH, {}).get("sha256")},
                      DATA: {k: files.get(DATA, {}).get(k) for k in ("sha256", "size")}}}


def check_copy(directory: Path, source_sha256: str) -> str | None:
    """None when the copy in ``directory`` is complete, intact and this cache's, else why not.

    ``directory`` is ``<cache>/prepared/<source_sha256>/<key>``: it, its files and
    the two folders above it must be the user's, not writable by others, and no links
    (else others could rename copies between this check and the load); the manifest must name
    ``source_sha256`` and carry the cache's seal (:func:`..trust.seal`). The graph
    file is hashed in full; the data file's size, mtime and ctime must be the
    manifest's and its sampled blocks must hash the same, or else its full sha256
    must match (the manifest then records the new times).
    """
    root = directory.parent.parent.parent
    try:
        owned_dir(directory.parent.parent)
        owned_dir(directory.parent)
        owned_dir(directory)
        manifest = json.loads(read_owned(directory / MANIFEST))
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError, UntrustedCache) as e:
        return f"no readable manifest ({e.__class__.__name__}: {e})"
    if manifest.get("source_sha256") != source_sha256 or manifest.get("key") != directory.name:
        return "the manifest belongs to another model or machine"
    if not sealed(root, _sealed_part(manifest), manifest.get("seal")):
        return "the manifest is not sealed by this cache (made elsewhere or forged)"
    files = manifest.get("files", {})
    try:
        owned_file(directory / GRAPH)
        if sha256_file(directory / GRAPH) != files[GRAPH]["sha256"]:
            return f"{GRAPH} does not match its sha256"
        data, want = directory / DATA, files[DATA]
        st = owned_file(data)
        if st.st_size != want["size"]:
            return f"{DATA} has {st.st_size} bytes, expected {want['size']}"
        if ((st.st_mtime_ns, st.st_ctime_ns) == (want["mtime_ns"], want.get("ctime_ns"))
                and sample_sha256(data) == want["sample_sha256"]):
            return None
        if sha256_file(data) != want["sha256"]:
            return f"{DATA} does not match its sha256"
    except (OSError, KeyError, TypeError, UntrustedCache) as e:
        return f"unreadable ({e.__class__.__name__}: {e})"
    want["mtime_ns"], want["ctime_ns"] = st.st_mtime_ns, st.st_ctime_ns  # touched, intact
    with contextlib.suppress(OSError, ElmoError):
        _write_json(directory / MANIFEST, manifest)
    return None


class PreparedCopyNotice(UserWarning):
    """Said once when a load writes a model's prepared copy (about twice its size)."""


def prepare(model: str | Path, root: Path | None = None, announce: bool = False) -> Path:
    """The prepared copy of ``model`` for this machine (its .onnx path), made if needed.

    ``announce``: a :class:`PreparedCopyNotice` (where, how big, how to remove it)
    when a copy was made (a first load writes ~2x the model's size).

    Raises PrepareError when the cache cannot be written or onnxruntime
    cannot prepare the model. A corrupt or incomplete copy is deleted and
    rebuilt, never returned.
    """
    model = Path(model)
    try:
        root = trusted_cache_root(root)
        sha = model_sha256(model, root)
        final = root / "prepared" / sha / copy_key()
        if check_copy(final, sha) is None:
            return final / GRAPH
        private_dir(root / "prepared")
        private_dir(final.parent)
        with locked(final.parent / ".lock"):
            why = check_copy(final, sha)  # another process may have built it meanwhile
            if why is None:
                return final / GRAPH
            if os.path.lexists(final):
                warnings.warn(f"{final}: prepared copy refused ({why}); rebuilding it",
                              UserWarning, stacklevel=2)
                if not remove_tree(final):
                    os.unlink(final)  # a link or a file in the copy's place
            _clean_siblings(final)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
            try:
                try:
                    _build(model, tmp, sha, final.name)
                except NotAModel:
                    remove_tree(final.parent)  # leave no trace in the cache
                    raise
                try:
                    os.rename(tmp, final)
                except OSError:  # a lock-less platform's concurrent builder won the rename
                    if check_copy(final, sha) is not None:
                        raise
                else:
                    if announce:
                        size = sum(f.stat().st_size for f in final.iterdir() if f.is_file())
                        warnings.warn(
                            f"{model}: wrote its prepared copy to {final} ({size / 2**20:.1f} "
                            "MiB, once per model and machine; `elmo cache clear` removes it)",
                            PreparedCopyNotice, stacklevel=2)
            finally:
                remove_tree(tmp)
        _collect(root, keep=sha)
    except UntrustedCache as e:
        raise PrepareError(str(e)) from None
    except OSError as e:
        raise PrepareError(f"{root}: cannot write the prepared-model cache ({e})") from e
    why = check_copy(final, sha)
    if why is not None:
        raise PrepareError(f"{final}: the copy just made does not check ({why})")
    return final / GRAPH


def min_model_bytes() -> int:
    """The size from which loads use a prepared copy: :data:`MIN_MODEL_BYTES`, or 0 when
    ``ELMO_EDGE_PREPARED=always``."""
    return 0 if _switch() == "always" else MIN_MODEL_BYTES


def load_path(model: str | Path, provider: str = "cpu", min_bytes: int | None = None) -> Path:
    """The file to load for ``model``: its prepared copy, or ``model`` itself.

    Only CPU sessions (``provider`` "cpu", or "auto" without CUDA) of models
    of at least ``min_bytes`` (default :data:`MIN_MODEL_BYTES`, 32 MiB; 0 when
    ``ELMO_EDGE_PREPARED=always``) use a prepared copy: below that the saving
    is small next to the interpreter's own memory. Falls back to ``model``
    with a UserWarning when preparing fails (unwritable cache, onnxruntime
    error), silently when preparing is switched off or the model is not a
    readable file (the plain load reports it).
    """
    model = Path(model)
    if not enabled() or resolve_provider(provider) != "cpu" or not model.is_file():
        return model
    if min_bytes is None:
        min_bytes = min_model_bytes()
    if model.stat().st_size < min_bytes:
        return model
    try:
        return prepare(model, announce=True)
    except NotAModel:  # checked before anything was optimized or cached
        return model
    except PrepareError as e:
        warnings.warn(f"{model}: loading without a prepared copy (peak memory about twice the "
                      f"model's bytes): {e}", UserWarning, stacklevel=2)
        return model


def _build(model: Path, tmp: Path, sha: str, key: str) -> None:
    """Prepare ``model`` into ``tmp`` in a child process and write the manifest."""
    proc = subprocess.run([sys.executable, "-m", CHILD, str(model), str(tmp), DATA,
                           GRAPH], capture_output=True, text=True)
    if proc.returncode == NOT_A_MODEL:  # its last line says why
        raise NotAModel((proc.stderr.strip().splitlines() or ["not an elmo-edge model"])[-1])
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        raise PrepareError(f"{model}: onnxruntime could not prepare it: {lines[-1]}")
    if not (tmp / GRAPH).is_file() or not (tmp / DATA).is_file():
        raise PrepareError(f"{model}: preparing it wrote no {GRAPH} / {DATA} in {tmp}")
    data = tmp / DATA
    files = {GRAPH: {"sha256": sha256_file(tmp / GRAPH)},
             DATA: {"sha256": sha256_file(data), "size": data.stat().st_size,
                    "mtime_ns": data.stat().st_mtime_ns, "ctime_ns": data.stat().st_ctime_ns,
                    "sample_sha256": sample_sha256(data)}}
    import onnxruntime as ort

    manifest = {"source_sha256": sha, "key": key, "recipe": RECIPE,
                "onnxruntime": ort.__version__, "cpu": cpu_features(), "files": files}
    manifest["seal"] = seal(tmp.parent.parent.parent, _sealed_part(manifest))
    _write_json(tmp / MANIFEST, manifest)


def _collect(root: Path, keep: str) -> None:
    """Forget models whose file is gone or changed: their index entries and copies."""
    index, wanted = root / INDEX, {keep}
    for entry in index.glob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError, UntrustedCache):
            known = json.loads(read_owned(entry))
            if Path(known["path"]).is_file():
                wanted.add(str(known["sha256"]))
            else:
                entry.unlink()
    for copies in model_dirs(root):
        if copies.name not in wanted:
            remove_tree(copies)


def _clean_siblings(final: Path) -> None:
    """Remove other keys' copies and dead builders' temporaries of the same model (lock held)."""
    for other in final.parent.iterdir():
        if other.name != final.name and (KEY_NAME.fullmatch(other.name)
                                         or other.name.startswith(".tmp-")):
            remove_tree(other)  # a link is left alone


def model_dirs(root: Path) -> list[Path]:
    """``<root>/prepared/<sha256>`` folders: real folders named by a sha256 (no links)."""
    try:
        entries = list(os.scandir(root / "prepared"))
    except OSError:
        return []
    return [Path(e.path) for e in entries
            if SHA_NAME.fullmatch(e.name) and e.is_dir(follow_symlinks=False)]


def _write_json(path: Path, value: dict[str, Any]) -> None:
    """Write JSON atomically (:func:`elmo_runtime.files.write_text_atomic`: temp, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(value, indent=1))
