"""Helpers shared by the tests and the benches (not tests themselves, never in the wheel;
fixtures stay in the conftest.py files).

Test modules import from here, never from another test module or from ``conftest``:
``tests/`` is on ``sys.path`` (pytest's ``pythonpath`` setting), so ``from support.cli
import run_elmo`` works from any test folder.

* :mod:`support.bilm_fixtures` — the bilm-tf fixture files: where, skip or fail when absent.
* :mod:`support.models` — small options, the closed-form toy model, test model builders.
* :mod:`support.cli` — ``elmo`` in-process and as a subprocess, interrupted runs.
* :mod:`support.errors` — :func:`~support.errors.one_line_error`, for every one-line error.
* :mod:`support.requires` — :func:`~support.requires.requires`: skip naming what is missing.
* :mod:`support.reference` — the independent NumPy oracle of the biLM (docs/elmo-spec.md).
* :mod:`support.notorch` — a preamble that makes ``import torch`` fail in a child Python.
* :mod:`support.serve` — a real ``elmo serve`` process and HTTP requests to it.
* :mod:`support.web` / :mod:`support.web_text` — the browser tests' paths, pages and texts.
* :mod:`support.efml_oracle` — ELMoForManyLangs models built and run by their own package.
* :mod:`support.bilm_random` / :mod:`support.efml_random` — seeded random weights and model
  folders (bilm-tf layout; ELMoForManyLangs format).
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The repository's root (the folder holding ``tests/``)."""
