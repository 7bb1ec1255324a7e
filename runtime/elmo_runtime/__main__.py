"""``python -m elmo_runtime``: the `elmo` command, where the script is not on PATH."""

from .cli import main

main(prog_name="elmo")
