"""The public ELMo models by name (``elmo pull NAME``, then ``--model NAME``).

``published.json`` beside this file lists each model: its files (role ``options`` +
``weights`` for an AllenNLP/bilm-tf pair, ``archive`` for an NLPL ZIP) with their URLs
(first the owner's, then mirrors; https only, with ``http_url`` the owner's documented
plain-http URL where that is all it documents: NLPL's), the size, sha256 and md5
**where published** (null otherwise: nothing here is guessed; ``elmo pull`` records the
sha256 of a file's first download and refuses a later one that differs), an approximate
size to show, the output width, the licence and the citation. Every fact comes from
../shared/MODELS_NOTES.md (the ``facts`` field names its sources; asking NLPL's host
for https is this project's choice, said in those fields). ``$ELMO_EDGE_EXTRA_MODELS``
may name a JSON file of more models in the same layout (an organisation's own, or a
test's); their names may not shadow these or the bundled ones; a key given twice in one
object is refused by name. Imports nothing of elmo-edge but its errors and its JSON key
check.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..files import unique_keys

PUBLISHED = "published.json"
ENV_EXTRA = "ELMO_EDGE_EXTRA_MODELS"
FORMATS = ("pair", "zip")
ROLES = {"pair": ("options", "weights"), "zip": ("archive",)}


@dataclass(frozen=True)
class PublishedFile:
    """One file of a published model: ``role`` (options, weights, archive), its URLs in
    the order tried, and its size in bytes / sha256 / md5 where published (else None);
    ``http_url``: the plain-http URL its owner documents where the URLs tried are the
    https form of it (never fetched; named when they fail, for a download by hand)."""

    role: str
    urls: tuple[str, ...]
    size_bytes: int | None = None
    sha256: str | None = None
    md5: str | None = None
    http_url: str | None = None

    @property
    def filename(self) -> str:
        """The name it gets in the cache: ``options.json``, ``weights.hdf5``, ``model.zip``."""
        return {"options": "options.json", "weights": "weights.hdf5",
                "archive": "model.zip"}[self.role]


@dataclass(frozen=True)
class PublishedModel:
    name: str
    format: str  # "pair" or "zip"
    description: str
    files: tuple[PublishedFile, ...]
    output_dim: int | None
    approx_size: str
    license: str
    citation: str
    facts: str


def _parse(entry: dict[str, Any], where: str) -> PublishedModel:
    try:
        files = tuple(PublishedFile(f["role"], tuple(f["urls"]), f.get("size_bytes"),
                                    f.get("sha256"), f.get("md5"), f.get("http_url"))
                      for f in entry["files"])
        model = PublishedModel(entry["name"], entry["format"], entry["description"], files,
                               entry.get("output_dim"), entry.get("approx_size", "unknown"),
                               entry.get("license", "unknown"), entry.get("citation", "not given"),
                               entry.get("facts", ""))
    except (KeyError, TypeError) as e:
        raise ModelError(f"{where}: a model entry lacks {e} (name, format, description, "
                         "files with role and urls)") from None
    if model.format not in FORMATS or tuple(f.role for f in files) != ROLES[model.format]:
        raise ModelError(f"{where}: model {model.name!r}: format must be 'pair' (files "
                         "options, weights) or 'zip' (one file, archive)")
    for f in files:
        if not f.urls or (f.size_bytes is not None and (not isinstance(f.size_bytes, int)
                                                        or f.size_bytes < 0)):
            raise ModelError(f"{where}: model {model.name!r}: file {f.role} needs URLs and "
                             "a size in bytes or null")
        if f.http_url is not None and (not isinstance(f.http_url, str)
                                       or not f.http_url.startswith("http://")):
            raise ModelError(f"{where}: model {model.name!r}: file {f.role}: http_url must be "
                             f"an http:// URL or absent, found {f.http_url!r}")
    return model


def _read(path: Path) -> list[PublishedModel]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=unique_keys)
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: cannot read the model list ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise ModelError(f"{path}: expected {{\"models\": [...]}}")
    return [_parse(entry, str(path)) for entry in data["models"]]


def published_models() -> list[PublishedModel]:
    """Every model of ``published.json``, then those of ``$ELMO_EDGE_EXTRA_MODELS``."""
    from . import models_dir, names

    models = _read(models_dir() / PUBLISHED)
    extra = os.environ.get(ENV_EXTRA)
    if extra:
        taken = {m.name for m in models} | set(names())
        for model in _read(Path(extra)):
            if model.name in taken:
                raise ModelError(f"{extra}: model {model.name!r} is already a published or "
                                 "bundled name; choose another")
            taken.add(model.name)
            models.append(model)
    return models


def published_names() -> list[str]:
    return [m.name for m in published_models()]


def get_published(name: str) -> PublishedModel:
    """The published model called ``name``; ModelError listing the names if there is none."""
    for model in published_models():
        if model.name == name:
            return model
    raise ModelError(f"no published model named {name!r}; known: "
                     f"{', '.join(published_names())} (elmo pull --list)")
