"""`python -m elmo_runtime.models [--update]`: check (or refresh) the bundled-model registry."""

from __future__ import annotations

import sys

from . import REGISTRY
from .maintain import check_registry, update_registry

if "--update" in sys.argv[1:]:
    update_registry()
problems = check_registry()
for problem in problems:
    print(f"{REGISTRY}: {problem}", file=sys.stderr)
print(f"{REGISTRY}: {'does not match the files' if problems else 'matches the files'}")
sys.exit(1 if problems else 0)
