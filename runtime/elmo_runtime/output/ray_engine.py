"""Embedding with Ray Data: a pool of actors, one onnxruntime session each, Parquet out.

* :func:`embed_dataset` turns any Ray Dataset with a ``text`` column (e.g.
  from ``ray.data.read_text``) into one with ``tokens``, ``shape`` and
  ``vectors`` columns (the Parquet layout of :mod:`.writers`); the other
  columns pass through. Each actor of an ``ActorPoolStrategy`` builds one
  :class:`~.embedder.Embedder` in ``__init__`` with as many intra-op threads
  as it has CPUs and reuses it for every batch. The model file must be
  readable at the same path on every node.
* :func:`read_lines` reads text files as rows of ``path``, ``line`` (0-based)
  and ``text``, split and decoded exactly as the local engine does (only
  "\\n" ends a line, blank lines kept, a BOM dropped, ``--errors``), a block
  at a time. (``ray.data.read_text`` has no line numbers, also splits on
  "\\r", "\\x0b", "\\u2028" … and reads each file whole.)
* :func:`embed_files` is ``elmo embed --engine ray``: it starts a private
  local Ray (or joins ``address``), writes the Parquet files to a staging
  directory, moves them into the output directory and records them with
  their sha256 in a manifest (:mod:`.shards`: a directory holding another
  run is refused unless ``overwrite``; a complete run is not redone).

A local Ray gets one CPU more than the actors take (:data:`HEADROOM_CPUS`):
with none left for the read and write tasks Ray Data waits forever. It keeps
its files in a new temp dir (removed afterwards) or ``temp_dir``, listens on
127.0.0.1 only, runs without the dashboard and usage reporting, and uses a
random token for its own authentication instead of writing
``~/.ray/auth_token``. Ray is imported only here, only when used.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..batching import DEFAULT_BATCH_SIZE
from ..corpus import decode_line
from ..errors import ElmoError
from ..files import sha256_file
from ..mix import ScalarMix, load_mix
from .shards import (
    DEFAULT_SHARD_SIZE,
    PARTIAL,
    input_info,
    mix_spec,
    model_fingerprint,
    output_directory,
    remove_outputs,
)
from .writers import PARQUET_OPTIONS, arrow_columns, check_dtype, import_pyarrow

RAY_HINT = "the ray engine needs Ray: pip install 'elmo-edge[ray]'"
HEADROOM_CPUS = 1  # for Ray Data's read and write tasks, next to the actors
CALL_BATCHES = 4  # an actor call embeds this many batches of sentences
LINES_PER_BLOCK = 4096
READ_BLOCK = 1 << 20
# Ray puts Unix sockets at <temp dir>/session_<date>_<pid>/sockets/plasma_store; a
# socket path has at most 107 bytes, so the temp dir's own path must stay short.
TEMP_DIR_MAX = 40
AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or ElmoError with the install hint."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise ElmoError(RAY_HINT) from None
    return ray


# ---------------------------------------------------------------------------- reading


def split_lines(read: Callable[[int], bytes], block_size: int = READ_BLOCK) -> Iterator[bytes]:
    """The lines of a byte stream read ``block_size`` bytes at a time, without their "\\n"."""
    pending: list[bytes] = []
    while block := read(block_size):
        *complete, tail = block.split(b"\n")
        if complete:
            yield b"".join([*pending, complete[0]])
            yield from complete[1:]
            pending = []
        pending.append(tail)
    last = b"".join(pending)
    if last:
        yield last


@functools.cache
def _lines_datasource() -> type:
    """A FileBasedDatasource (Ray's documented extension point) of numbered lines."""
    from ray.data.datasource import FileBasedDatasource

    class LinesDatasource(FileBasedDatasource):
        def __init__(self, paths: list[str], errors: str):
            super().__init__(paths)
            self._errors = errors

        def _read_stream(self, f: Any, path: str) -> Iterator[Any]:
            pa = import_pyarrow()[0]
            rows: list[str] = []
            start = 0
            for number, line in enumerate(split_lines(f.read), 1):
                rows.append(decode_line(line, path, number, self._errors))
                if len(rows) == LINES_PER_BLOCK:
                    yield _lines_table(pa, path, start, rows)
                    start, rows = number, []
            if rows:
                yield _lines_table(pa, path, start, rows)

    return LinesDatasource


def _lines_table(pa: Any, path: str, start: int, rows: list[str]) -> Any:
    return pa.table(
        {
            "path": pa.array([path] * len(rows), pa.string()),
            "line": pa.array(range(start, start + len(rows)), pa.int64()),
            "text": pa.array(rows, pa.string()),
        }
    )


def read_lines(paths: str | Sequence[str], errors: str = "strict") -> Any:
    """A Ray Dataset of the lines of text files: ``path``, ``line`` (0-based), ``text``."""
    ray = import_ray()
    paths = [paths] if isinstance(paths, str) else list(paths)
    return ray.data.read_datasource(_lines_datasource()(paths, errors))


# ---------------------------------------------------------------------------- embedding


class EmbedBatches:
    """The callable class of ``map_batches``: one Embedder per actor, reused for every batch."""

    def __init__(
        self,
        model: str | None,
        mix: str | dict[str, Any],
        dtype: str,
        batch_size: int,
        provider: str,
        threads: int,
        text_column: str,
    ):
        from ..embedder import Embedder

        mixer = ScalarMix(**mix) if isinstance(mix, dict) else mix
        self._emb = Embedder(model, provider=provider, threads=threads, mix=mixer)
        self._dtype = dtype
        self._batch_size = batch_size
        self._text_column = text_column

    def __call__(self, batch: Any) -> Any:
        tokens = [text.split() for text in batch.column(self._text_column).to_pylist()]
        arrays = list(self._emb.embed_sentences(tokens, self._batch_size))
        out = batch.drop_columns([self._text_column])
        for name, column in arrow_columns(tokens, arrays, self._dtype).items():
            out = out.append_column(name, column)
        return out


def embed_dataset(
    ds: Any,
    model: str | os.PathLike | None = None,
    *,
    mix: str | ScalarMix = "all",
    dtype: str = "float32",
    batch_size: int = DEFAULT_BATCH_SIZE,
    actors: int = 1,
    threads: int = 1,
    gpus_per_actor: float = 0.0,
    provider: str = "auto",
    text_column: str = "text",
) -> Any:
    """``ds`` with ``text_column`` replaced by ``tokens``, ``shape`` and ``vectors``.

    ``text_column`` holds one whitespace-tokenized sentence a row. ``actors``
    actors of ``threads`` CPUs (and ``gpus_per_actor`` GPUs) each run one
    onnxruntime session. ``mix``: "all", "top", "average" or a ScalarMix;
    ``dtype``: "float32" or "float16". Lazy, like every Ray Data transform.
    """
    ray = import_ray()
    check_dtype(dtype)
    return ds.map_batches(
        EmbedBatches,
        fn_constructor_kwargs={
            "model": None if model is None else str(Path(model).resolve()),
            "mix": mix_spec(mix),
            "dtype": dtype,
            "batch_size": batch_size,
            "provider": provider,
            "threads": threads,
            "text_column": text_column,
        },
        batch_size=batch_size * CALL_BATCHES,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=threads,
        num_gpus=gpus_per_actor,
    )


# ---------------------------------------------------------------------------- the Ray session


@contextmanager
def _environ(values: dict[str, str], restore: tuple[str, ...] = ()) -> Iterator[None]:
    """``values`` set in os.environ; they and ``restore`` are put back as they were after."""
    saved = {k: os.environ.get(k) for k in (*values, *restore)}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def ray_session(
    address: str | None = None, cpus: int | None = None, temp_dir: str | os.PathLike | None = None
) -> Iterator[Any]:
    """Ray, joined at ``address`` or started locally with ``cpus`` CPUs; shut down after.

    A Ray already initialized in this process is used as it is.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    with _ray_data_quiet(), _session(ray, address, cpus, temp_dir):
        yield ray


@contextmanager
def _ray_data_quiet() -> Iterator[None]:
    """Ray Data's console logging off: failures come back as exceptions, in one line here.

    Its progress lines, a false "no available CPUs" alarm while the actors
    start, and tracebacks of user errors stay in the logs under Ray's temp dir.
    """
    logger = logging.getLogger("ray.data")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextmanager
def _session(
    ray: Any, address: str | None, cpus: int | None, temp_dir: str | os.PathLike | None
) -> Iterator[None]:
    if address is not None:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
        try:
            yield
        finally:
            ray.shutdown()
        return
    own = temp_dir is None
    directory = _temp_dir() if own else Path(temp_dir).resolve()
    if len(str(directory)) > TEMP_DIR_MAX:
        raise ElmoError(
            f"{directory}: too long for Ray's sockets ({len(str(directory))} characters, at "
            f"most {TEMP_DIR_MAX}); pass a shorter --ray-temp-dir"
        )
    env = {"RAY_USAGE_STATS_ENABLED": "0"}
    if not {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"} & set(os.environ):
        # Ray turns token authentication on for a new local cluster and would write
        # ~/.ray/auth_token and say so; a token of its own keeps it quiet and private.
        env["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
        logging.getLogger(AUTH_LOGGER).setLevel(logging.ERROR)
    try:
        with _environ(env, restore=("RAY_AUTH_MODE",)):
            ray.init(
                num_cpus=cpus,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                _temp_dir=str(directory),
                _node_ip_address="127.0.0.1",
            )
            try:
                yield
            finally:
                ray.shutdown()
    finally:
        if own:
            shutil.rmtree(directory, ignore_errors=True)


def _temp_dir() -> Path:
    """A new directory for a local Ray, in the temp dir or, if its path is too long, in /tmp."""
    base = Path(tempfile.gettempdir()).resolve()
    if len(str(base)) + len("/elmo-ray-12345678") > TEMP_DIR_MAX:
        base = Path("/tmp")
    return Path(tempfile.mkdtemp(prefix="elmo-ray-", dir=base))


def default_actors(ray: Any, threads: int, gpus_per_actor: float) -> int:
    """As many actors as the cluster's CPUs (less the headroom) and GPUs allow."""
    resources = ray.cluster_resources()
    actors = int((resources.get("CPU", 0) - HEADROOM_CPUS) // threads)
    if gpus_per_actor:
        actors = min(actors, int(resources.get("GPU", 0) // gpus_per_actor))
    return max(1, actors)


def _elmo_error(error: BaseException) -> ElmoError | None:
    """The ElmoError that a Ray failure wraps, as one line, if there is one.

    Ray re-raises a task's exception as a ``RayTaskError`` that also
    subclasses the original type and keeps the original as ``cause``.
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, ElmoError) and not hasattr(e, "cause"):
            return ElmoError(_first_line(e))
        todo += [e.__context__, e.__cause__, getattr(e, "cause", None)]
    return None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


# ---------------------------------------------------------------------------- the CLI's run


@dataclass
class RayRun:
    """What ``--engine ray`` wrote: sentences and Parquet files."""

    lines: int
    files: int
    done_before: bool = False


def embed_files(
    inputs: Sequence[str],
    output: str | os.PathLike,
    model: str | os.PathLike | None = None,
    *,
    mix: str | os.PathLike | ScalarMix = "all",
    dtype: str = "float32",
    batch_size: int = DEFAULT_BATCH_SIZE,
    provider: str = "auto",
    threads: int = 1,
    errors: str = "strict",
    overwrite: bool = False,
    address: str | None = None,
    actors: int | None = None,
    gpus_per_actor: float = 0.0,
    temp_dir: str | os.PathLike | None = None,
) -> RayRun:
    """Embed the lines of ``inputs`` into Parquet files in the directory ``output``."""
    from ..embedder import Embedder

    import_ray()
    import_pyarrow()
    inputs = [path if "://" in path else os.path.abspath(path) for path in inputs]
    for path in inputs:
        if "://" not in path and not os.path.exists(path):
            raise ElmoError(f"{path}: no such input file")
    emb = Embedder(model, provider="cpu", threads=1, mix=mix)  # a bad model fails here, at once
    if isinstance(mix, os.PathLike):
        mix = load_mix(mix, emb.info.options.n_output_layers)
    settings = {
        "model": model_fingerprint(emb.model_path, emb.info),
        "mix": mix_spec(mix),
        "format": "parquet",
        "dtype": check_dtype(dtype).name,
        "errors": errors,
    }
    model_path = emb.model_path
    del emb  # the actors load their own sessions; this one only checked the model
    with output_directory(output, "ray", settings, input_info(inputs), overwrite) as manifest:
        if manifest.complete:
            return RayRun(manifest.lines or 0, len(manifest.shards), done_before=True)
        remove_outputs(manifest.directory)  # of a run that failed part way: Ray redoes it all
        manifest.shards = []
        staging = manifest.directory / f".ray{PARTIAL}{os.getpid()}"
        if address is None and actors is None:
            actors = max(1, ((os.cpu_count() or 1) - HEADROOM_CPUS) // threads)
        cpus = None if actors is None else actors * threads + HEADROOM_CPUS
        try:
            with ray_session(address, cpus, temp_dir) as session:
                pool = actors or default_actors(session, threads, gpus_per_actor)
                _check_headroom(session, pool, threads)
                ds = embed_dataset(
                    read_lines(inputs, errors),
                    model_path,
                    mix=mix,
                    dtype=dtype,
                    batch_size=batch_size,
                    actors=pool,
                    threads=threads,
                    gpus_per_actor=gpus_per_actor,
                    provider=provider,
                )
                _write(ds, staging)
            manifest.shards = _publish(staging, manifest.directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        manifest.complete = True
        manifest.lines = sum(record["rows"] for record in manifest.shards)
        manifest.save()
        return RayRun(manifest.lines, len(manifest.shards))


def _check_headroom(ray: Any, actors: int, threads: int) -> None:
    cpus = ray.cluster_resources().get("CPU", 0)
    if actors * threads > cpus - HEADROOM_CPUS:
        warnings.warn(
            f"{actors} actors x {threads} CPUs leave less than {HEADROOM_CPUS} of the cluster's "
            f"{cpus:g} CPUs for reading and writing; Ray Data may stall until the cluster grows",
            UserWarning,
            stacklevel=3,
        )


def _write(ds: Any, staging: Path) -> None:
    try:
        ds.write_parquet(str(staging), min_rows_per_file=DEFAULT_SHARD_SIZE, **PARQUET_OPTIONS)
    except Exception as e:  # Ray wraps what failed in its own exception types
        cause = _elmo_error(e)
        if cause is not None:
            raise cause from None
        raise ElmoError(
            f"the Ray job failed: {_first_line(e)} (pass --ray-temp-dir DIR to keep Ray's logs)"
        ) from e


def _publish(staging: Path, directory: Path) -> list[dict[str, Any]]:
    """Move the Parquet files of ``staging`` into ``directory``; their manifest records."""
    pq = import_pyarrow()[1]
    records = []
    files = sorted(staging.glob("*.parquet")) if staging.is_dir() else []
    for i, source in enumerate(files):
        name = f"part-{i:05d}.parquet"
        os.replace(source, directory / name)
        path = directory / name
        records.append(
            {
                "file": name,
                "rows": pq.ParquetFile(path).metadata.num_rows,
                "sha256": sha256_file(path),
                "bytes": path.stat().st_size,
            }
        )
    return records
