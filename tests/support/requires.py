"""``requires(...)``: a test that needs an optional package or program skips, naming it.

    pytestmark = requires("ray")                      # a whole module
    @requires("onnx_ir")                              # one test
    pytest.param("int4", marks=requires("onnx_ir"))   # one parameter
    need("torch")                                     # inside a fixture or a test body

The reason names the missing thing and how to get it (the extra that brings it), e.g.
``needs ray: pip install 'elmo-edge[ray]'``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil

import pytest

# import name -> how to get it (a Python package: the extra of elmo-edge that brings it)
HINTS = {
    "torch": "pip install 'elmo-edge[export]'",
    "h5py": "pip install 'elmo-edge[hdf5]'",
    "onnx_ir": "pip install 'elmo-edge[quantize]'",
    "pyarrow": "pip install 'elmo-edge[parquet]'",
    "ray": "pip install 'elmo-edge[ray]'",
    "starlette": "pip install 'elmo-edge[serve]'",
    "uvicorn": "pip install 'elmo-edge[serve]'",
    "prometheus_client": "pip install 'elmo-edge[serve]'",
    "orjson": "pip install 'elmo-edge[serve]'",
    "elmoformanylangs": "pip install 'elmo-edge[oracle]'",
    "playwright": "pip install 'elmo-edge[dev]'",
    "openai": "pip install 'elmo-edge[dev]'",
    "matplotlib": "pip install 'elmo-edge[dev]'",
    "node": "apt-get install nodejs",
    "chromium": "apt-get install chromium, or set CHROMIUM to its path",
    "wordnet": "apt-get install wordnet-base",
}
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
WORDNET = "/usr/share/wordnet"


@functools.cache
def missing(name: str) -> bool:
    """True when ``name`` (an importable module, or "node", "chromium", "wordnet") is absent."""
    if name == "node":
        return shutil.which("node") is None
    if name == "chromium":
        return not os.path.isfile(CHROMIUM)
    if name == "wordnet":
        return not os.path.isdir(WORDNET)
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):  # a parent package missing, or a broken install
        return True


def reason(names: tuple[str, ...]) -> str:
    """``needs X: how to get it; needs Y: …`` for the missing ones among ``names``."""
    gone = [n for n in names if missing(n)]
    return "; ".join(f"needs {n}: {HINTS.get(n, f'install {n}')}" for n in gone)


def requires(*names: str) -> pytest.MarkDecorator:
    """A skip marker that applies when any of ``names`` is missing; its reason names them."""
    if not names:
        raise TypeError("requires() needs at least one name")
    why = reason(names)
    return pytest.mark.skipif(bool(why), reason=why or f"has {', '.join(names)}")


def need(*names: str) -> None:
    """Skip the calling test or fixture now when any of ``names`` is missing (as
    :func:`requires`, for places a marker cannot reach)."""
    why = reason(names)
    if why:
        pytest.skip(why, allow_module_level=True)
