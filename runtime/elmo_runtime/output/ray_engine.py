"""Embedding with Ray Data: a pool of actors, one onnxruntime session each, Parquet out.

* :func:`embed_dataset` turns any Ray Dataset with a ``text`` column (e.g.
  from ``ray.data.read_text``) into one with ``tokens``, ``shape`` and
  ``vectors`` columns (the Parquet layout of :mod:`.writers`); the other
  columns pass through. Each actor of an ``ActorPoolStrategy`` builds one
  :class:`~.embedder.Embedder` in ``__init__`` from the driver's resolved
  :class:`~..settings.EmbedderSettings`, passed as JSON data (the model's
  absolute path, the mix's weights, the token cache size; the registry and
  a mix file are not read again), with as many intra-op threads as it has
  CPUs, and reuses it for every batch. The model file must be readable at
  the same path on every node.
* :func:`read_lines` reads text files as rows of ``path``, ``line`` (0-based)
  and ``text``, split and decoded exactly as the local engine does (lines end
  at "\\n", "\\r\\n" or a lone "\\r", blank lines kept, a BOM dropped,
  ``--errors``), a block at a time. (``ray.data.read_text`` has no line
  numbers, also splits on "\\x0b", "\\u2028" … and reads each file whole.)
* :func:`embed_files` is ``elmo embed --engine ray``: it starts a private
  local Ray (:mod:`.ray_session`: loopback only) or joins ``address``, writes
  the Parquet files to a staging directory, moves them into the output
  directory and records them with their sha256 in a manifest (:mod:`.rundir`:
  inputs identified by path and the sha256 of their content; a directory
  holding another run is refused unless ``overwrite``; a complete run is not
  redone). Ray is imported only here, only when used.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import corpus
from ..batching import DEFAULT_BATCH_SIZE
from ..corpus import decode_line, iter_lines, tokenizer
from ..cpus import available_cpus
from ..errors import RAY_HINT, ElmoError, first_line
from ..files import partial_path, publish, sha256_file
from ..mix import Mix
from ..settings import EmbedderSettings, MixSpec
from ..token_cache import DEFAULT_CACHE_MB
from .arrow import PARQUET_OPTIONS, arrow_columns, import_pyarrow
from .ray_session import (
    HEADROOM_CPUS,
    check_pool,
    default_actors,
    import_ray,
    ray_session,
)
from .rundir import input_info, model_fingerprint, output_directory, remove_outputs
from .shards import DEFAULT_SHARD_SIZE
from .values import check_dtype

if TYPE_CHECKING:
    from ..embedder import Embedder

__all__ = [
    "HEADROOM_CPUS", "RAY_HINT", "embed_dataset", "embed_files", "import_ray", "ray_session",
    "read_lines",
]

CALL_BATCHES = 4  # an actor call embeds this many batches of sentences
LINES_PER_BLOCK = 4096
READ_BLOCK = 1 << 20
_LINE_END = re.compile(rb"\r\n|\r|\n")


# ---------------------------------------------------------------------------- reading


def split_lines(
    read: Callable[[int], bytes], block_size: int = READ_BLOCK, name: str = "input"
) -> Iterator[bytes]:
    """The lines of a byte stream read ``block_size`` bytes at a time, without their "\\n".

    (A lone "\\r" inside is cut by :func:`..corpus.iter_lines` afterwards.) Bounded as the
    local reader: a line (ended by "\\n", "\\r\\n" or a lone "\\r") longer than
    :data:`..corpus.MAX_LINE_BYTES` raises its InputError (``NAME:LINE: a line longer
    than ...``) once that many bytes are read, so at most that plus a block is held.
    """
    limit = corpus.MAX_LINE_BYTES
    ends, run, cr_last = 0, 0, False  # line ends so far; bytes since the last; block ended "\r"
    pending: list[bytes] = []
    while block := read(block_size):
        # the "\n" of a "\r\n" cut between two blocks ends no other line
        *inner, tail = _LINE_END.split(block[cr_last and block.startswith(b"\n"):])
        cr_last = block.endswith(b"\r")
        for number, piece in enumerate(inner, ends + 1):
            if run + len(piece) > limit:
                raise corpus.line_too_long(name, number)
            run = 0
        ends, run = ends + len(inner), run + len(tail)
        if run > limit:
            raise corpus.line_too_long(name, ends + 1)
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
            for number, line in enumerate(iter_lines(split_lines(f.read, name=path)), 1):
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
    """The callable class of ``map_batches``: one Embedder per actor, reused for every batch.

    ``settings``: :meth:`EmbedderSettings.to_dict` of the driver's resolved
    settings (data crosses the process boundary, not a callable).
    """

    def __init__(
        self,
        settings: dict[str, Any],
        dtype: str,
        text_column: str = "text",
        tokenize: bool = False,
    ):
        from ..embedder import Embedder

        self._emb = Embedder.from_settings(EmbedderSettings.from_dict(settings))
        self._dtype = dtype
        self._text_column = text_column
        self._split = tokenizer(tokenize)

    def __call__(self, batch: Any) -> Any:
        tokens = [self._split(text) for text in batch.column(self._text_column).to_pylist()]
        check_lengths(batch, tokens)
        arrays = list(self._emb.embed_sentences(tokens))
        out = batch.drop_columns([self._text_column])
        for name, column in arrow_columns(tokens, arrays, self._dtype).items():
            out = out.append_column(name, column)
        return out


def check_lengths(batch: Any, tokens: list[list[str]]) -> None:
    """The local reader's InputError (``PATH:LINE: N tokens, more than ...``) for the first
    sentence over :data:`..corpus.MAX_TOKENS`, when the rows carry ``path`` and ``line``
    (:func:`read_lines`); other datasets get the Embedder's own check (``sentence I: ...``)."""
    over = next((i for i, t in enumerate(tokens) if len(t) > corpus.MAX_TOKENS), None)
    if over is not None and {"path", "line"} <= set(batch.column_names):
        path, line = batch.column("path")[over].as_py(), batch.column("line")[over].as_py()
        raise corpus.too_many_tokens(path, line + 1, len(tokens[over]), corpus.MAX_TOKENS)


def embed_dataset(
    ds: Any,
    model: str | os.PathLike | None = None,
    *,
    mix: str | os.PathLike | Mix | MixSpec | None = "all",
    dtype: str = "float32",
    batch_size: int = DEFAULT_BATCH_SIZE,
    actors: int = 1,
    threads: int = 1,
    gpus_per_actor: float = 0.0,
    provider: str = "auto",
    text_column: str = "text",
    token_cache_mb: float = DEFAULT_CACHE_MB,
    tokenize: bool = False,
    settings: EmbedderSettings | None = None,
    max_restarts: int | None = None,
) -> Any:
    """``ds`` with ``text_column`` replaced by ``tokens``, ``shape`` and ``vectors``.

    ``text_column`` holds one whitespace-tokenized sentence a row (raw text
    with ``tokenize``: :func:`..tokenize.tokenize`). ``actors`` actors of
    ``threads`` CPUs (and ``gpus_per_actor`` GPUs) each run one onnxruntime
    session with a token cache of ``token_cache_mb`` MiB. ``mix``: "all",
    "top", "average", a ScalarMix, a MixSpec or a mix file; ``dtype``:
    "float32" or "float16". ``settings``, when given, replace ``model``,
    ``mix``, ``batch_size``, ``threads``, ``provider`` and ``token_cache_mb``.
    The model is resolved here, once; each actor gets the resolved settings
    as data. ``max_restarts``: how often Ray restarts a dead actor (None: Ray
    Data's default, forever; it then logs an ERROR line per run because the
    actors' arguments live in the object store). Lazy, like every Ray Data
    transform.
    """
    ray = import_ray()
    check_dtype(dtype)
    if settings is None:
        settings = EmbedderSettings(
            model=model, provider=provider, threads=threads, mix=MixSpec.of(mix),
            token_cache_mb=token_cache_mb, batch_size=batch_size)  # type: ignore[arg-type]
    if settings.path is None:
        settings = settings.resolved()
    settings = replace(settings, threads=settings.threads or 1)  # an actor's CPUs
    threads = settings.threads
    with warnings.catch_warnings():
        # Ray 2.60 takes max_restarts only through ray_remote_args, deprecated for named
        # parameters it does not have yet; the warning would be a line on every run
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        return ds.map_batches(
            EmbedBatches,
            fn_constructor_kwargs={
                "settings": settings.to_dict(),
                "dtype": dtype,
                "text_column": text_column,
                "tokenize": tokenize,
            },
            batch_size=settings.batch_size * CALL_BATCHES,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=threads,
            num_gpus=gpus_per_actor,
            **({} if max_restarts is None else {"max_restarts": max_restarts}),
        )


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
            return ElmoError(first_line(e))
        todo += [e.__context__, e.__cause__, getattr(e, "cause", None)]
    return None


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
    settings: EmbedderSettings | None = None,
    mix: str | os.PathLike | Mix | MixSpec | None = "all",
    dtype: str = "float32",
    batch_size: int = DEFAULT_BATCH_SIZE,
    provider: str = "auto",
    threads: int = 1,
    errors: str = "strict",
    tokenize: bool = False,
    token_cache_mb: float = DEFAULT_CACHE_MB,
    overwrite: bool = False,
    address: str | None = None,
    actors: int | None = None,
    gpus_per_actor: float = 0.0,
    temp_dir: str | os.PathLike | None = None,
    emb: Embedder | None = None,
) -> RayRun:
    """Embed the lines of ``inputs`` into Parquet files in the directory ``output``.

    ``settings``, when given, replace ``model``, ``mix``, ``batch_size``,
    ``provider``, ``threads`` and ``token_cache_mb``: they are what each
    actor gets (as data). ``emb``, if given, is the driver's Embedder of the
    same model (the CLI's, built once); else one is built here, on one CPU
    thread, to check the model. The run is identified by the model, the mix
    (:meth:`MixSpec.key`, as the local engine records it), the other
    settings and each input's path, size and sha256 (its content).
    """
    import_ray()
    import_pyarrow()
    inputs = [path if "://" in path else os.path.abspath(path) for path in inputs]
    for path in inputs:
        if "://" not in path and not os.path.exists(path):
            raise ElmoError(f"{path}: no such input file")
    if settings is None:
        settings = EmbedderSettings(
            model=model, provider=provider, threads=threads, mix=MixSpec.of(mix),
            token_cache_mb=token_cache_mb, batch_size=batch_size)  # type: ignore[arg-type]
    if emb is None:
        from ..embedder import Embedder

        emb = Embedder.from_settings(replace(settings, provider="cpu", threads=1,
                                             token_cache_mb=0))
    # resolved (actors never look the name up) and one thread an actor unless asked
    settings = replace(settings, path=str(emb.model_path), threads=settings.threads or 1)
    threads = settings.threads
    recorded = {
        "model": model_fingerprint(emb.model_path, emb.info),
        "mix": settings.mix.key(),
        "tokenize": tokenize,
        "format": "parquet",
        "dtype": check_dtype(dtype).name,
        "errors": errors,
    }
    identity = input_info(inputs, content=True)
    with output_directory(output, "ray", recorded, identity, overwrite) as manifest:
        if manifest.complete:
            return RayRun(manifest.lines or 0, len(manifest.shards), done_before=True)
        remove_outputs(manifest.directory)  # of a run that failed part way: Ray redoes it all
        manifest.shards = []
        staging = partial_path(manifest.directory / "ray")
        if address is None and actors is None:
            actors = max(1, (available_cpus() - HEADROOM_CPUS) // threads)
        cpus = None if address is not None else actors * threads + HEADROOM_CPUS
        try:
            with ray_session(address, cpus, temp_dir) as session:
                pool = actors if actors is not None else (
                    default_actors(session, threads, gpus_per_actor)
                )
                check_pool(session, pool, threads, gpus_per_actor)
                ds = embed_dataset(
                    read_lines(inputs, errors),
                    dtype=dtype,
                    actors=pool,
                    gpus_per_actor=gpus_per_actor,
                    tokenize=tokenize,
                    settings=settings,
                    # a private local Ray: an actor that died (OOM) would die again, and
                    # Ray's restarts cost an ERROR line on every run; a cluster keeps them
                    max_restarts=0 if address is None else None,
                )
                _write(ds, staging)
            manifest.shards = _publish(staging, manifest.directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        manifest.complete = True
        manifest.lines = sum(record["rows"] for record in manifest.shards)
        manifest.save()
        return RayRun(manifest.lines, len(manifest.shards))


def _write(ds: Any, staging: Path) -> None:
    try:
        ds.write_parquet(str(staging), min_rows_per_file=DEFAULT_SHARD_SIZE, **PARQUET_OPTIONS)
    except Exception as e:  # Ray wraps what failed in its own exception types
        cause = _elmo_error(e)
        if cause is not None:
            raise cause from None
        raise ElmoError(
            f"the Ray job failed: {first_line(e)} (pass --ray-temp-dir DIR to keep Ray's logs)"
        ) from e


def _publish(staging: Path, directory: Path) -> list[dict[str, Any]]:
    """Move the Parquet files of ``staging`` into ``directory``; their manifest records."""
    pq = import_pyarrow()[1]
    records = []
    files = sorted(staging.glob("*.parquet")) if staging.is_dir() else []
    for i, source in enumerate(files):
        name = f"part-{i:05d}.parquet"
        publish(source, directory / name)  # flushed, renamed, directory flushed
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
