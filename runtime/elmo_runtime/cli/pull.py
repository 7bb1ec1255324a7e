"""`elmo pull NAME`: a published ELMo model into the user cache (:mod:`..compat.pull`)."""

from __future__ import annotations

import click

from ..models.published import published_models


@click.command("pull")
@click.argument("name", required=False)
@click.option("--list", "list_", is_flag=True, help="List the published models and exit.")
def pull_command(name: str | None, list_: bool) -> None:
    """Download the published model NAME, verify it, convert it once; then --model NAME.

    Files go to CACHE/pulled/NAME (CACHE: $ELMO_EDGE_CACHE, else
    $XDG_CACHE_HOME/elmo-edge, else ~/.cache/elmo-edge); an interrupted pull resumes.
    ELMO_EDGE_MODEL_MIRROR=URL fetches https://HOST/PATH as URL/HOST/PATH;
    ELMO_EDGE_EXTRA_MODELS=FILE adds models (published.json's layout). Without NAME (or
    with --list): the models, their size, licence and citation.
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
