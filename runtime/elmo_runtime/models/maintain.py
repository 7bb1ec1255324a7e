"""Registry maintenance: measure the bundled files, check and rewrite ``registry.json``.

Apart from the registry itself (:mod:`elmo_runtime.models`) because measuring
opens the models (:mod:`elmo_runtime.loading`), which reads the registry.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from ..files import sha256_file, write_text_atomic
from ..loading.loaded import open_model
from . import REGISTRY, BundledModel, _read_registry, bundled_models, models_dir


def measure(model: BundledModel) -> dict[str, Any]:
    """The measured fields of ``model`` (:data:`~elmo_runtime.models.MEASURED`), from its file."""
    loaded = open_model(model.path, "cpu", threads=1, prepare=False)
    info = loaded.info
    return {
        "size_bytes": model.path.stat().st_size,
        "sha256": sha256_file(model.path),
        "layers": info.options.n_output_layers,
        "dim": info.options.output_dim,
        "parameters": info.options.n_parameters(),
        "quantization": info.quantization.get("mode", "none"),
    }


def check_registry() -> list[str]:
    """Every way the registry differs from the files (empty when it matches)."""
    problems = []
    for model in bundled_models():
        if not model.path.is_file():
            problems.append(f"{model.name}: {model.file} is missing")
            continue
        if not (models_dir() / model.license_file).is_file():
            problems.append(f"{model.name}: license file {model.license_file} is missing")
        recorded = asdict(model)
        for key, value in measure(model).items():
            if recorded[key] != value:
                problems.append(f"{model.name}: {key} is {value!r}, the registry says "
                                f"{recorded[key]!r}")
    return problems


def update_registry() -> None:
    """Rewrite the measured fields of ``registry.json`` from the files."""
    entries = _read_registry()
    for entry in entries:
        entry.update(measure(BundledModel(**entry)))
    text = json.dumps({"models": entries}, indent=2, ensure_ascii=False) + "\n"
    write_text_atomic(models_dir() / REGISTRY, text)
