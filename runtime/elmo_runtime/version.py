"""The version of elmo-edge, read once from the installed package's metadata (pyproject.toml).

Its own module so that every room can name it without importing the package root.
"""

from __future__ import annotations

from importlib import metadata

DISTRIBUTION = "elmo-edge"

try:
    __version__ = metadata.version(DISTRIBUTION)
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
