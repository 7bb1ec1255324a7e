"""`elmo cache`: see, make ahead of time, or delete the prepared copies of big models.

A prepared copy (:mod:`elmo_runtime.loading.prepared`) is made on a model's first CPU
load and takes about twice the model's bytes in the user cache; `elmo cache
prepare` makes it at deployment instead, so no request pays for it.
"""

from __future__ import annotations

import time

import click

from ..errors import ElmoError
from ..files import format_mib
from ..loading.hashes import cache_root
from ..loading.model_file import locate
from ..loading.prepared import cache as prepared
from ..loading.prepared import inventory


@click.group("cache")
def cache_command() -> None:
    """The prepared copies of big models (pre-packed weights, memory-mapped at load).

    Where: $ELMO_EDGE_CACHE, else $XDG_CACHE_HOME/elmo-edge, else ~/.cache/elmo-edge.
    """


@cache_command.command("list")
def list_command() -> None:
    """Each copy: its size, the model file(s) it was made from, and whether this machine uses it."""
    root = cache_root()
    copies = inventory.list_copies(root)
    total = sum(c["bytes"] for c in copies)
    noun = "copy" if len(copies) == 1 else "copies"
    click.echo(f"{root}: {len(copies)} prepared {noun}, {format_mib(total)}")
    for c in copies:
        models = ", ".join(c["models"] + [f"{m} (changed or gone since)" for m in c["changed"]])
        models = models or "(model file not seen since)"
        stale = "" if c["current"] else " [made for another onnxruntime or CPU: unused here]"
        click.echo(f"  {format_mib(c['bytes']):>10}  {c['sha256'][:12]}  {models}{stale}")


@cache_command.command("prepare")
@click.argument("models", nargs=-1, required=True, metavar="MODEL...")
def prepare_command(models: tuple[str, ...]) -> None:
    """Make this machine's prepared copy of each MODEL now (a path or a bundled name).

    Models under 32 MiB are skipped (they load as they are; a copy would not be used)
    unless ELMO_EDGE_PREPARED=always, which makes and uses copies of every model.
    """
    # every name checked before minutes go into the first copy
    paths = [locate(model).path for model in models]
    always = prepared.min_model_bytes() == 0
    for done, path in enumerate(paths):
        if not always and path.stat().st_size < prepared.MIN_MODEL_BYTES:
            click.echo(f"{path}: {format_mib(path.stat().st_size)}, under "
                       f"{format_mib(prepared.MIN_MODEL_BYTES)}: loaded as it is, a copy would "
                       "not be used; nothing prepared (ELMO_EDGE_PREPARED=always uses copies of "
                       "every model)")
            continue
        start = time.perf_counter()
        try:
            made = prepared.prepare(path)
        except KeyboardInterrupt:
            if not done:
                raise
            raise KeyboardInterrupt(f"interrupted while preparing {path}; the copies of "
                                    "the models before it are made and kept") from None
        try:
            size = sum(f.stat().st_size for f in made.parent.iterdir() if f.is_file())
        except OSError as e:  # a concurrent `elmo cache clear`
            raise ElmoError(f"{path}: its prepared copy in {made.parent} was removed as soon "
                            f"as it was made ({e.__class__.__name__})") from None
        click.echo(f"{path}: prepared copy in {made.parent} ({format_mib(size)}, "
                   f"{time.perf_counter() - start:.1f} s)")


@cache_command.command("clear")
@click.argument("model", required=False)
def clear_command(model: str | None) -> None:
    """Delete the prepared copies of MODEL, or all of them. They are remade when needed.

    A model whose copy is being made right now is left as it is (with a warning). A process
    loading a model whose copy goes falls back to the model file with a warning.
    """
    path = None if model is None else locate(model).path
    count, freed = inventory.clear(path)
    noun = "copy" if count == 1 else "copies"
    click.echo(f"removed {count} prepared {noun}, {format_mib(freed)}")
