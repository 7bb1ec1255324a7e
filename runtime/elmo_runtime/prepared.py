"""Prepared models: a per-machine copy whose pre-packed weights are memory-mapped.

onnxruntime re-packs every MatMul/Gemm weight for the CPU's kernels (MLAS)
when a session loads, and keeps the packed copy on the heap next to the
original tensor: a model costs about twice its bytes. A *prepared* copy is
the graph onnxruntime has already optimized, written with its weights *and*
their pre-packed forms in an external data file
(``session.save_external_prepacked_constant_initializers``); loading it
memory-maps that file, so the weights are neither on the heap nor held twice.
Before preparing, weights that live inside a ``Scan`` body are moved to the
main graph (:func:`hoist_scan_initializers`): onnxruntime keeps a body's raw
weights alive next to their packed copies, the main graph's it releases.

Where: a user cache (``$ELMO_EDGE_CACHE``, else ``$XDG_CACHE_HOME/elmo-edge``,
else ``~/.cache/elmo-edge``), under ``prepared/<sha256 of the model>/<key>``
where the key names the recipe, the onnxruntime version and the CPU's
instruction-set features (packed layouts depend on all three). The .onnx file
stays the one thing a user copies; a copy is made on the first load on a
machine, in a child process (its memory peak is not the caller's), and takes
about twice the model's bytes on disk.

Safety: a copy is built in a temporary directory and renamed into place, one
builder at a time per model (``flock``); a concurrent loser of the rename uses
the winner's copy. A manifest records the sha256 of every file: the graph
file is hashed on every load, the data file's size and mtime are compared
and 16 sampled blocks hashed; any difference forces a full hash, and a copy
that fails it is deleted and rebuilt, never used. A copy whose key no longer
matches (new onnxruntime, other CPU) is not found and is rebuilt (older
siblings are removed). When the cache cannot be written, or preparing fails,
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
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ElmoError
from .files import write_text_atomic

RECIPE = "p2"  # bump when the way a copy is made changes: older copies are then rebuilt
GRAPH, DATA, MANIFEST = "model.onnx", "model.onnx.data", "manifest.json"
MIN_EXTERNAL_BYTES = 1024  # initializers at least this big go to the memory-mapped file
MIN_MODEL_BYTES = 32 << 20  # smaller models load as they are (load_path)
SAMPLES, SAMPLE_BYTES = 16, 1 << 16
ENV_CACHE, ENV_SWITCH = "ELMO_EDGE_CACHE", "ELMO_EDGE_PREPARED"
# Instruction-set flags (/proc/cpuinfo) that decide which MLAS kernels, hence packed layouts, run.
ISA_FLAGS = (
    "sse3", "ssse3", "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw",
    "avx512dq", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile",
    "amx_int8", "amx_bf16", "asimd", "asimddp", "sve", "sve2", "i8mm", "bf16",
)


class PrepareError(ElmoError):
    """A prepared copy could not be made or read (:func:`load_path` then loads the model as is)."""


def cache_root() -> Path:
    """The elmo-edge cache directory (``$ELMO_EDGE_CACHE``, XDG cache, or ``~/.cache``)."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "elmo-edge"


def enabled() -> bool:
    """False when ``ELMO_EDGE_PREPARED`` is 0/false/no/off."""
    return _switch() not in ("0", "false", "no", "off")


def _switch() -> str:
    return os.environ.get(ENV_SWITCH, "1").strip().lower()


def cpu_features() -> str:
    """The CPU's architecture and the instruction-set flags packed layouts depend on."""
    flags: set[str] = set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8",
                                            errors="replace") as f:
        for line in f:
            if line.startswith(("flags", "Features")):
                flags = set(line.split(":", 1)[1].split())
                break
    return " ".join([platform.machine().lower() or "unknown", *sorted(flags & set(ISA_FLAGS))])


def copy_key() -> str:
    """Directory name of this machine's copy: recipe, onnxruntime version, CPU features."""
    import onnxruntime as ort

    cpu = hashlib.sha256(cpu_features().encode()).hexdigest()[:12]
    return f"{RECIPE}-ort{ort.__version__}-{cpu}"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


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


def model_sha256(model: Path, root: Path) -> str:
    """sha256 of ``model``, remembered in ``root/index`` by path, size, mtime and inode."""
    st = model.stat()
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}
    real = str(model.resolve())
    entry = root / "index" / (hashlib.sha256(real.encode()).hexdigest()[:32] + ".json")
    with contextlib.suppress(OSError, ValueError):
        known = json.loads(entry.read_text(encoding="utf-8"))
        if known.get("stamp") == stamp and known.get("path") == real:
            return str(known["sha256"])
    digest = sha256_file(model)
    with contextlib.suppress(OSError):  # a read-only cache only costs the hash next time
        _write_json(entry, {"path": real, "stamp": stamp, "sha256": digest})
    return digest


def copy_dir(model: str | Path, root: Path | None = None) -> Path:
    """Where this machine's prepared copy of ``model`` lives (made or not)."""
    root = cache_root() if root is None else root
    return root / "prepared" / model_sha256(Path(model), root) / copy_key()


def check_copy(directory: Path, source_sha256: str) -> str | None:
    """None when the copy in ``directory`` is complete and intact, else why it is not.

    The graph file is hashed in full; the data file's size and mtime must be
    the manifest's and its sampled blocks must hash the same, or else its
    full sha256 must match (the manifest then records the new mtime).
    """
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"no readable manifest ({e.__class__.__name__})"
    if manifest.get("source_sha256") != source_sha256 or manifest.get("key") != directory.name:
        return "the manifest belongs to another model or machine"
    files = manifest.get("files", {})
    try:
        if sha256_file(directory / GRAPH) != files[GRAPH]["sha256"]:
            return f"{GRAPH} does not match its sha256"
        data, want = directory / DATA, files[DATA]
        st = data.stat()
        if st.st_size != want["size"]:
            return f"{DATA} has {st.st_size} bytes, expected {want['size']}"
        if st.st_mtime_ns == want["mtime_ns"] and sample_sha256(data) == want["sample_sha256"]:
            return None
        if sha256_file(data) != want["sha256"]:
            return f"{DATA} does not match its sha256"
    except (OSError, KeyError, TypeError) as e:
        return f"unreadable ({e.__class__.__name__}: {e})"
    want["mtime_ns"] = st.st_mtime_ns  # touched or copied, but intact
    with contextlib.suppress(OSError):
        _write_json(directory / MANIFEST, manifest)
    return None


def prepare(model: str | Path, root: Path | None = None) -> Path:
    """The prepared copy of ``model`` for this machine (its .onnx path), made if needed.

    Raises PrepareError when the cache cannot be written or onnxruntime
    cannot prepare the model. A corrupt or incomplete copy is deleted and
    rebuilt, never returned.
    """
    model = Path(model)
    root = cache_root() if root is None else root
    try:
        sha = model_sha256(model, root)
        final = root / "prepared" / sha / copy_key()
        if check_copy(final, sha) is None:
            return final / GRAPH
        final.parent.mkdir(parents=True, exist_ok=True)
        with _locked(final.parent / ".lock"):
            why = check_copy(final, sha)  # another process may have built it meanwhile
            if why is None:
                return final / GRAPH
            if final.exists():
                warnings.warn(f"{final}: prepared copy refused ({why}); rebuilding it",
                              UserWarning, stacklevel=2)
                shutil.rmtree(final, ignore_errors=True)
            _clean_siblings(final)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
            try:
                _build(model, tmp, sha, final.name)
                try:
                    os.rename(tmp, final)
                except OSError:  # a lock-less platform's concurrent builder won the rename
                    if check_copy(final, sha) is not None:
                        raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    except OSError as e:
        raise PrepareError(f"{root}: cannot write the prepared-model cache ({e})") from e
    why = check_copy(final, sha)
    if why is not None:
        raise PrepareError(f"{final}: the copy just made does not check ({why})")
    return final / GRAPH


def load_path(model: str | Path, provider: str = "cpu", min_bytes: int | None = None) -> Path:
    """The file to load for ``model``: its prepared copy, or ``model`` itself.

    Only CPU sessions (``provider`` "cpu", or "auto" without CUDA) of models
    of at least ``min_bytes`` (default :data:`MIN_MODEL_BYTES`, 32 MiB; 0 when
    ``ELMO_EDGE_PREPARED=always``) use a
    prepared copy: below that the saving is small next to the interpreter's own
    memory and not worth a cache entry.
    Falls back to ``model`` with a UserWarning when preparing fails
    (unwritable cache, onnxruntime error), silently when preparing is switched
    off or the model is not a readable file (the plain load reports it).
    """
    model = Path(model)
    if not enabled() or provider not in ("cpu", "auto") or not model.is_file():
        return model
    if min_bytes is None:
        min_bytes = 0 if _switch() == "always" else MIN_MODEL_BYTES
    if model.stat().st_size < min_bytes:
        return model
    if provider == "auto":
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            return model
    try:
        return prepare(model)
    except PrepareError as e:
        warnings.warn(f"{model}: loading without a prepared copy (peak memory about twice the "
                      f"model's bytes): {e}", UserWarning, stacklevel=2)
        return model


def hoist_scan_initializers(proto: Any, min_bytes: int = MIN_EXTERNAL_BYTES) -> int:
    """Move big initializers of ``Scan``/``Loop`` bodies into the main graph, in place.

    The body then names them from the outer scope, which ONNX allows; results
    do not change. onnxruntime pre-packs outer-scope weights for the body's
    kernels and releases the originals, which it does not for a body's own
    initializers. Returns how many were moved (0 when already hoisted).
    """
    import onnx

    moved = 0
    for node in proto.graph.node:
        for attr in node.attribute:
            if attr.type != onnx.AttributeProto.GRAPH:
                continue
            body, keep = attr.g, []
            for tensor in body.initializer:
                if _nbytes(tensor) < min_bytes:
                    keep.append(tensor)
                    continue
                new = f"{node.name}__{tensor.name}"
                for inner in body.node:
                    for i, name in enumerate(inner.input):
                        if name == tensor.name:
                            inner.input[i] = new
                tensor.name = new
                proto.graph.initializer.append(tensor)
                moved += 1
            del body.initializer[:]
            body.initializer.extend(keep)
    return moved


def fold_matmul_bias(proto: Any) -> int:
    """Rewrite ``Add(MatMul(x, W), b)`` of the main graph as one ``Gemm``, in place.

    ``W`` a 2-D and ``b`` a 1-D initializer; ``x`` of any rank >= 2 is viewed
    as 2-D (``Reshape`` aliases, it copies nothing). onnxruntime does not fuse
    a 3-D MatMul with its bias, and its Add is not in place: the LSTM input
    projection of a batch (steps x 4 x lstm_dim floats) was held twice.
    Results change by float rounding only. Returns how many were rewritten.
    """
    from onnx import helper, numpy_helper

    graph = proto.graph
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 15:  # Shape's start/end attributes
        return 0
    inits = {t.name: t for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    uses: dict[str, int] = {}
    for n in graph.node:
        for name in n.input:
            uses[name] = uses.get(name, 0) + 1
    outputs = {o.name for o in graph.output}
    nodes, folded = [], 0
    for node in graph.node:
        mm = producer.get(node.input[0]) if node.op_type == "Add" and len(node.input) == 2 else None
        mm = mm if mm is not None and mm.op_type == "MatMul" and len(mm.input) == 2 else None
        w = inits.get(mm.input[1]) if mm is not None else None
        b = inits.get(node.input[1]) if mm is not None else None
        if (mm is None or w is None or b is None or len(w.dims) != 2
                or list(b.dims) != [w.dims[1]] or uses.get(mm.output[0]) != 1
                or mm.output[0] in outputs):
            nodes.append(node)
            continue
        x, y, tag = mm.input[0], node.output[0], f"{mm.name or mm.output[0]}__fold"
        flat = numpy_helper.from_array(np.array([-1, w.dims[0]], np.int64), f"{tag}_flat")
        last = numpy_helper.from_array(np.array([w.dims[1]], np.int64), f"{tag}_n")
        graph.initializer.extend([flat, last])
        if mm in nodes:
            nodes.remove(mm)
        nodes += [
            helper.make_node("Shape", [x], [f"{tag}_lead"], name=f"{tag}_shape", end=-1),
            helper.make_node("Concat", [f"{tag}_lead", last.name], [f"{tag}_shape_out"],
                             name=f"{tag}_concat", axis=0),
            helper.make_node("Reshape", [x, flat.name], [f"{tag}_x2"], name=f"{tag}_flatten"),
            helper.make_node("Gemm", [f"{tag}_x2", mm.input[1], node.input[1]], [f"{tag}_y2"],
                             name=f"{tag}_gemm"),
            helper.make_node("Reshape", [f"{tag}_y2", f"{tag}_shape_out"], [y],
                             name=f"{tag}_unflatten"),
        ]
        folded += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return folded


def _nbytes(tensor: Any) -> int:
    if tensor.external_data:
        return int(next((e.value for e in tensor.external_data if e.key == "length"), 0))
    return len(tensor.raw_data) or tensor.ByteSize()


def _build(model: Path, tmp: Path, sha: str, key: str) -> None:
    """Prepare ``model`` into ``tmp`` in a child process and write the manifest."""
    proc = subprocess.run([sys.executable, "-m", "elmo_runtime.prepared", str(model), str(tmp)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        raise PrepareError(f"{model}: onnxruntime could not prepare it: {lines[-1]}")
    data = tmp / DATA
    files = {GRAPH: {"sha256": sha256_file(tmp / GRAPH)},
             DATA: {"sha256": sha256_file(data), "size": data.stat().st_size,
                    "mtime_ns": data.stat().st_mtime_ns, "sample_sha256": sample_sha256(data)}}
    import onnxruntime as ort

    _write_json(tmp / MANIFEST, {"source_sha256": sha, "key": key, "recipe": RECIPE,
                                 "onnxruntime": ort.__version__, "cpu": cpu_features(),
                                 "files": files})


def _make(model: Path, out_dir: Path) -> None:
    """Child process: hoist, then let onnxruntime write the optimized, pre-packed model."""
    import onnx

    from .session import create_session

    proto = onnx.load(str(model))
    hoist_scan_initializers(proto)
    fold_matmul_bias(proto)
    staged = out_dir / "staged.onnx"
    onnx.save(proto, str(staged), save_as_external_data=True, location="staged.data",
              size_threshold=MIN_EXTERNAL_BYTES)
    del proto
    config = {
        "session.optimized_model_external_initializers_file_name": DATA,
        "session.optimized_model_external_initializers_min_size_in_bytes": str(MIN_EXTERNAL_BYTES),
        "session.save_external_prepacked_constant_initializers": "1",
    }
    create_session(staged, "cpu", threads=1, config=config,
                   optimized_model_path=out_dir / GRAPH)
    staged.unlink()
    (out_dir / "staged.data").unlink(missing_ok=True)
    for name in (GRAPH, DATA):
        with open(out_dir / name, "rb") as f:
            os.fsync(f.fileno())


def _clean_siblings(final: Path) -> None:
    """Remove other keys' copies and dead builders' temporaries of the same model (lock held)."""
    for other in final.parent.iterdir():
        if other.is_dir() and other.name != final.name:
            shutil.rmtree(other, ignore_errors=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (no lock where fcntl is missing: rename still decides)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _write_json(path: Path, value: dict[str, Any]) -> None:
    """Write JSON atomically (:func:`elmo_runtime.files.write_text_atomic`: temp, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(value, indent=1))


if __name__ == "__main__":  # the child process of _build: python -m elmo_runtime.prepared SRC OUT
    _make(Path(sys.argv[1]), Path(sys.argv[2]))
