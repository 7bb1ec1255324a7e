"""Issue 24 item 10: a UTF-8 byte-order mark (a file saved on Windows) is accepted in every
JSON file the tool reads: a mix file, options.json, a run's manifest."""

from __future__ import annotations

import json
from pathlib import Path

from elmo_runtime.format.options import load_options
from elmo_runtime.mix import ScalarMix, load_mix
from elmo_runtime.output.rundir import MANIFEST, Manifest, read_manifest

BOM = b"\xef\xbb\xbf"


def test_a_mix_file_with_a_bom_loads(tmp_path: Path) -> None:
    path = tmp_path / "mix.json"
    path.write_bytes(BOM + b'{"weights": [1, 2, 3], "gamma": 0.5}')
    assert load_mix(path, 3) == ScalarMix([1.0, 2.0, 3.0], 0.5, False)


def test_options_with_a_bom_load(tmp_path: Path, bilm_fixtures: Path) -> None:
    options_json = bilm_fixtures / "options.json"
    path = tmp_path / "options.json"
    path.write_bytes(BOM + options_json.read_bytes())
    assert load_options(path) == load_options(options_json)


def test_a_manifest_with_a_bom_is_read(tmp_path: Path) -> None:
    Manifest(tmp_path, "local", {"a": 1}, [], []).save()
    path = tmp_path / MANIFEST
    plain = read_manifest(tmp_path)
    path.write_bytes(BOM + path.read_bytes())
    assert read_manifest(tmp_path) == plain == json.loads(path.read_text("utf-8-sig"))
