"""`python -m elmo_runtime.cli`: the `elmo` command."""

from . import main

main()
