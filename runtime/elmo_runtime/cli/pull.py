"""`elmo pull NAME`: a published ELMo model into the user cache (:mod:`..compat.pull`)."""

from __future__ import annotations

import click

from ..models.published import published_models


@click.command("pull")
@click.argument("name", required=False)
@click.option("--list", "list_", is_flag=True, help="List the published models and exit.")
def pull_command(name: str | None, list_: bool) -> None:
    """Download the published model NAME, verify it, convert it once; then --model NAME.

    Files go to the user cache ($ELMO_EDGE_CACHE, else ~/.cache/elmo-edge/pulled/NAME);
    an interrupted pull resumes. Without NAME (or with --list): the models, their size,
    licence and citation.
    """
    if list_ or name is None:
        for model in published_models():
            click.echo(f"{model.name}: {model.description}")
            click.echo(f"    size {model.approx_size}; licence: {model.license}")
            click.echo(f"    cite: {model.citation}")
        return
    from ..compat.pull import pull

    path = pull(name)
    click.echo(f"pulled {name}: {path} (use --model {name})", err=True)
