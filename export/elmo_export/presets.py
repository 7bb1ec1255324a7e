"""Named biLM sizes: the options JSON files in ``elmo_export/presets/``.

``small``, ``medium`` and ``original`` are the published AllenNLP sizes
(13.6M, 28.0M and 93.6M parameters); ``tiny`` trains in seconds, for tests.
"""

from __future__ import annotations

from pathlib import Path

from elmo_runtime.errors import OptionsError
from elmo_runtime.format.options import ElmoOptions, load_options

PRESETS_DIR = Path(__file__).resolve().parent / "presets"  # shipped as package data


def preset_names() -> list[str]:
    """The available preset names, sorted."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.json"))


def load_preset(name: str) -> ElmoOptions:
    """The options of preset ``name``; the error lists the available ones."""
    path = PRESETS_DIR / f"{name}.json"
    if not path.is_file():
        available = ", ".join(preset_names()) or f"none found in {PRESETS_DIR}"
        raise OptionsError(
            f"unknown preset {name!r}; available: {available} (or pass an options JSON file)"
        )
    return load_options(path)


def resolve_options(value: str) -> ElmoOptions:
    """A preset name, or the path of an options JSON file (anything with a '.json' or a '/')."""
    if value.endswith(".json") or "/" in value or Path(value).is_file():
        return load_options(value)
    return load_preset(value)
