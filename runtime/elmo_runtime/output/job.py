"""An embed job: everything that decides a run of ``elmo embed``, and the engine that runs it.

:class:`EmbedJob` holds the inputs, the output and every setting;
:meth:`EmbedJob.check` refuses what cannot work before anything is loaded
or written; :func:`run_job` builds the :class:`~..embedder.Embedder` once
and hands it to one engine:

* ``file``: one output file (hdf5, npz or Parquet), written as a stream and
  renamed into place at the end (:func:`.writers.open_writer`);
* ``shards``: a resumable directory of shards (:mod:`.shards`), when OUTPUT
  is a directory, ends with "/", or ``shard_size`` is given;
* ``ray``: Ray Data actors writing Parquet files (:mod:`.ray_engine`); each
  actor rebuilds the Embedder from the job's resolved
  :class:`~..settings.EmbedderSettings` (data: the model's path, the mix's
  weights), never from a name or a file it would read again.

The input is text (one sentence a line) or protein FASTA (:mod:`..fasta`: one residue a
token, detected by content or ``input_format="fasta"``), which goes to one file keyed by
record id, each record's vectors the layer sum SeqVec users compute (``(n, 2P)``) or,
with ``reduce="mean"``, its mean over the residues (``(2P,)``).
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import stat
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ..corpus import MAX_TOKENS, read_lines
from ..errors import RAY_HINT, ElmoError, UsageError
from ..files import check_not_an_input, check_output
from ..settings import EmbedderSettings
from .arrow import import_pyarrow
from .writers import (
    FORMATS,
    KEYED_FORMATS,
    STDOUT,
    check_extension,
    format_of,
    import_h5py,
    infer_format,
    open_writer,
)

if TYPE_CHECKING:
    from ..embedder import Embedder

ENGINES = ("local", "ray")
REDUCTIONS = ("mean",)
CONVERTED_BILM_TF = "elmo-hdf5"  # the source kind `elmo convert` records for bilm-tf weights
RAY_ONLY = ("address", "actors", "gpus_per_actor", "ray_temp_dir")

Progress = Callable[[int], None]


@dataclass(frozen=True)
class EmbedJob:
    """One ``elmo embed`` run: what is read, what is written, and everything that decides it.

    ``embedder``: the model, mix, provider, threads, batch size and caps, the most
    tokens (residues) a sentence may have (:class:`~..settings.EmbedderSettings`,
    checked when made); its ``threads`` are those of the one session (local) or of
    each actor (Ray, 1 by default). ``mix_given``: the mix was asked for; FASTA
    without one (``embedder.mix`` "all" and not given) gets the layer sum SeqVec
    users take. ``input_format``: "text", "fasta" or None (FASTA when the first
    non-blank line of the input file starts with ">"). ``reduce``: None, or "mean"
    (FASTA only) for one vector per record.
    ``format``: None infers it from OUTPUT's extension. The Ray fields (``address``,
    ``actors``, ``gpus_per_actor``, ``ray_temp_dir``) need ``engine="ray"``.
    """

    inputs: tuple[str, ...]
    output: str
    embedder: EmbedderSettings = field(default_factory=EmbedderSettings)
    mix_given: bool = False
    dtype: str = "float32"
    format: str | None = None
    errors: str = "strict"
    tokenize: bool = False
    shard_size: int | None = None
    overwrite: bool = False
    engine: str = "local"
    address: str | None = None
    actors: int | None = None
    gpus_per_actor: float = 0.0
    ray_temp_dir: str | None = None
    input_format: str | None = None
    reduce: str | None = None

    @property
    def fasta(self) -> bool:
        """Whether the input is FASTA (given, or sniffed from the first input file)."""
        if self.input_format is not None:
            return self.input_format == "fasta"
        from ..fasta import is_fasta

        return self.inputs[0] != "-" and is_fasta(self.inputs[0])

    @property
    def sum_layers(self) -> bool:
        """FASTA without a mix asked for: each residue's vector is the sum of the layers
        (the Embedder gives them all; the sum is taken after it)."""
        return not self.mix_given and self.embedder.mix.mode == "all" and self.fasta

    @property
    def layout(self) -> str:
        """"ray", "shards" (a directory OUTPUT on the local engine) or "file"."""
        if self.engine == "ray":
            return "ray"
        out = self.output
        if self.shard_size is not None or out.endswith(("/", os.sep)) or Path(out).is_dir():
            return "shards"
        return "file"

    def check(self) -> None:
        """Raise UsageError / ElmoError for a job that cannot run.

        Nothing is read beyond ``stat`` and the first bytes of a FASTA-sniffed input,
        and nothing is written, except that temp files of killed runs beside a file
        OUTPUT are removed (:func:`..files.check_output`, the one output rule).
        """
        if self.engine not in ENGINES:
            raise UsageError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")
        if self.format is not None and self.format not in FORMATS:
            raise UsageError(f"unknown format {self.format!r}; choose one of {', '.join(FORMATS)}")
        if not self.inputs:
            raise UsageError("no INPUT given")
        from ..fasta import INPUT_FORMATS

        if self.input_format not in (None, *INPUT_FORMATS):
            raise UsageError(f"unknown input format {self.input_format!r}; choose one of "
                             f"{', '.join(INPUT_FORMATS)}")
        if self.reduce not in (None, *REDUCTIONS):
            raise UsageError(f"unknown reduction {self.reduce!r}; choose one of "
                             f"{', '.join(REDUCTIONS)}")
        if self.engine == "ray":
            self._check_ray()
        else:
            given = [f"--{name.replace('_', '-')}" for name in RAY_ONLY
                     if getattr(self, name) not in (None, 0.0)]
            if given:
                raise UsageError(f"{', '.join(given)} need --engine ray")
            if len(self.inputs) > 1:
                raise UsageError("several INPUTs need --engine ray (or concatenate them into -)")
        for path in self.inputs:
            if path != "-" and "://" not in path and not os.path.exists(path):
                raise ElmoError(f"{path}: no such input file")
        if self.fasta:
            self._check_fasta()
        elif self.reduce is not None:
            raise UsageError("--reduce is for FASTA input (one vector per protein); this "
                             "input is text (pass --input-format fasta if it is FASTA)")
        if self.layout != "file" and Path(self.output).exists() and not Path(self.output).is_dir():
            raise ElmoError(f"{self.output}: exists and is not a directory")
        if self.output == STDOUT and self.layout != "file":
            raise UsageError("OUTPUT - (stdout) is one npz stream; --shard-size and --engine ray "
                             "write directories")
        if self.layout == "shards":
            self._check_directory_name()
        check_not_an_input(self.output, self.inputs)
        if self.layout == "shards":
            self._check_writer_installed(self.format or "hdf5")
        if self.layout != "file":
            return
        check_extension(self.output, self.format)
        self._check_writer_installed(infer_format(self.output, self.format))
        if self.output == STDOUT:
            return
        parent = Path(self.output).parent
        if not parent.is_dir():
            raise ElmoError(f"{self.output}: directory {parent} does not exist")
        check_output(self.output, self.inputs, self.overwrite)  # before the model loads

    @staticmethod
    def _check_writer_installed(fmt: str) -> None:
        """ElmoError (the install hint) when the format's library is missing: before the
        model loads and before a shard directory or its manifest is made."""
        if fmt == "hdf5":
            import_h5py()
        elif fmt == "parquet":
            import_pyarrow()

    def _check_directory_name(self) -> None:
        """ElmoError for a new shard directory named like a file (``x.npz``)."""
        out = self.output
        named = format_of(out)
        if named is None or out.endswith(("/", os.sep)) or Path(out).is_dir():
            return
        raise ElmoError(
            f"{out}: looks like a file name ({named}), but --shard-size writes a directory of "
            f"shards; give a directory name (e.g. {Path(out).with_suffix('')}/ with --format "
            f"{named}), or drop --shard-size for one file"
        )

    def _check_fasta(self) -> None:
        """UsageError for what FASTA input cannot go with (one file keyed by record id)."""
        if self.layout != "file":
            raise UsageError("FASTA input writes one file keyed by record id: give an .h5 or "
                             ".npz OUTPUT (no --engine ray, --shard-size or directory)")
        if self.tokenize:
            raise UsageError("--tokenize is for raw text; FASTA is one residue per token")
        if self.embedder.stateful:
            raise UsageError("--stateful: FASTA records are embedded stateless (use the "
                             "AllenNLP drop-in for bio_embeddings' state carried by row)")
        fmt = infer_format(self.output, self.format)
        if fmt not in KEYED_FORMATS:
            raise UsageError(f"{self.output}: FASTA input is written keyed by record id, as "
                             f"{' or '.join(KEYED_FORMATS)}, not {fmt}")

    def _check_ray(self) -> None:
        if self.embedder.max_sentence_tokens != MAX_TOKENS:
            raise UsageError(f"--max-sentence-tokens: the ray engine keeps the default bound "
                             f"({MAX_TOKENS})")
        if self.format not in (None, "parquet"):
            raise UsageError("--engine ray writes Parquet; drop --format or use --format parquet")
        if self.embedder.stateful:
            raise UsageError("--stateful needs the local engine (Ray batches are independent)")
        if self.shard_size is not None:
            raise UsageError("--shard-size is for the local engine (Ray sizes its own files)")
        if "-" in self.inputs:
            raise UsageError("--engine ray reads files, not stdin")
        if importlib.util.find_spec("ray") is None:  # before the checks of files and OUTPUT
            raise ElmoError(RAY_HINT)


@dataclass
class JobResult:
    """What a run did: sentences, files written, shards reused, or found complete."""

    layout: str
    lines: int
    files: int
    resumed: int = 0
    done_before: bool = False


@contextmanager
def open_input(name: str) -> Iterator[BinaryIO]:
    """The input as a binary stream; "-" is stdin."""
    if name == "-":
        yield sys.stdin.buffer
        return
    try:
        f = open(name, "rb")  # noqa: SIM115 (closed by the with below)
    except FileNotFoundError:
        raise ElmoError(f"{name}: no such input file") from None
    except OSError as e:
        raise ElmoError(f"{name}: cannot read the input ({e.strerror})") from None
    with f:
        yield f


def build_embedder(job: EmbedJob) -> Embedder:
    """The job's one Embedder, its model resolved and checked once for the whole run (on the
    Ray engine: the driver's, on one CPU thread without a token cache, to check the model).

    Its ``settings`` are the job's, resolved (the model's absolute path).
    """
    from ..embedder import Embedder

    file = job.embedder.locate()
    if job.engine == "ray":
        checking = replace(job.embedder, provider="cpu", threads=1, token_cache_mb=0)
        return Embedder.from_settings(checking, file)
    return Embedder.from_settings(job.embedder, file)


def run_job(job: EmbedJob, progress: Progress = lambda lines: None) -> JobResult:
    """Check ``job``, build its Embedder once and run it on its engine.

    ``progress`` is called with the number of lines done as the run goes on
    (not by the Ray engine); an exception it raises stops the run cleanly.
    """
    job.check()
    emb = build_embedder(job)
    if job.tokenize and emb.info.source.get("kind") == CONVERTED_BILM_TF:
        warnings.warn(
            f"{emb.model_path}: a converted bilm-tf model was trained on text tokenized "
            "another way (`Ms.` kept whole, no clitic split); --tokenize splits it as the "
            "bundled model was trained: give it text tokenized its way, without --tokenize",
            UserWarning, stacklevel=2)
    if job.layout == "ray":
        return _run_ray(job, emb)
    if job.layout == "shards":
        return _run_shards(job, emb, progress)
    if job.fasta:
        return _run_fasta(job, emb, progress)
    return _run_file(job, emb, progress)


def _run_fasta(job: EmbedJob, emb: Embedder, progress: Progress) -> JobResult:
    """Each record's vectors under its id: the layer sum (float32 ``(n, 2P)``, summed in
    layer order as ``embedding.sum(0)`` does) or the mix asked for, then optionally their
    mean over the residues (``.mean(0)`` of that: ``(2P,)``)."""
    from ..fasta import read_fasta

    name = job.inputs[0]
    with open_input(name) as stream, open_writer(job.output, job.format, job.dtype,
                                                 keyed=True) as writer:
        records, to_embed = itertools.tee(
            read_fasta(stream, name, job.errors, emb.max_sentence_tokens))
        residues = (record.residues for record in to_embed)
        for record, vectors in zip(records, emb.embed_sentences(residues), strict=True):
            if job.sum_layers:
                vectors = vectors.sum(0)
            if job.reduce == "mean":
                vectors = vectors.mean(-2)
            writer.write(record.residues, vectors, key=record.id)
            progress(1)
    return JobResult("file", writer.count, 1)


def _run_file(job: EmbedJob, emb: Embedder, progress: Progress) -> JobResult:
    name = job.inputs[0]
    with open_input(name) as stream, open_writer(job.output, job.format, job.dtype) as writer:
        lines, to_embed = itertools.tee(read_lines(stream, name, job.errors, job.tokenize,
                                                   emb.max_sentence_tokens))
        tokens = (line.tokens for line in to_embed)
        for line, vectors in zip(lines, emb.embed_sentences(tokens), strict=True):
            writer.write(line.tokens, vectors, key=line.key)
            progress(1)
    return JobResult("file", writer.count, 1)


def _run_shards(job: EmbedJob, emb: Embedder, progress: Progress) -> JobResult:
    from .shards import embed_sharded

    name = job.inputs[0]
    with open_input(name) as stream:
        run = embed_sharded(
            emb,
            stream,
            name,
            job.output,
            fmt=job.format or "hdf5",
            dtype=job.dtype,
            shard_size=job.shard_size,  # None: the run's recorded size, else the default
            errors=job.errors,
            tokenize=job.tokenize,
            overwrite=job.overwrite,
            progress=progress,
        )
    done_before = bool(run.shards) and run.resumed == run.shards
    return JobResult("shards", run.lines, run.shards, run.resumed, done_before)


def _run_ray(job: EmbedJob, emb: Embedder) -> JobResult:
    from .ray_engine import embed_files

    actors = replace(emb.settings, provider=job.embedder.provider,
                     threads=job.embedder.threads or 1,
                     token_cache_mb=job.embedder.token_cache_mb)  # resolved: the model's path
    run = embed_files(
        list(job.inputs),
        job.output,
        settings=actors,
        emb=emb,
        dtype=job.dtype,
        errors=job.errors,
        tokenize=job.tokenize,
        overwrite=job.overwrite,
        address=job.address,
        actors=job.actors,
        gpus_per_actor=job.gpus_per_actor,
        temp_dir=job.ray_temp_dir,
    )
    return JobResult("ray", run.lines, run.files, done_before=run.done_before)


def count_lines(path: str) -> int | None:
    """Number of lines of a regular file (None for pipes and the like), as the engines count.

    A line ends at "\\n", "\\r\\n" or a lone "\\r"; a last line without an end counts.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        count, last, cr = 0, b"\n", False
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                count += block.count(b"\n") + block.count(b"\r") - block.count(b"\r\n")
                if cr and block[:1] == b"\n":
                    count -= 1  # a "\r\n" split across two blocks
                cr = block[-1:] == b"\r"
                last = block[-1:]
    except OSError:
        return None
    return count + (last not in (b"\n", b"\r"))
