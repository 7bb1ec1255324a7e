"""The one ``torch.load`` of the project: tensors and plain containers only, never code.

Training checkpoints (:mod:`elmo_export.train.checkpoint`) and ELMoForManyLangs
state dicts (:mod:`elmo_export.efml.model`) are ``torch.save`` files, i.e.
pickles. Both are read here with ``weights_only=True``, which refuses any
global outside torch's allow-list without running it; the callers word the
error for their file.
"""

from __future__ import annotations

import io
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from elmo_runtime.errors import ElmoError, first_line


class TorchFileError(ElmoError):
    """A ``torch.save`` file that the tensors-only loader cannot or will not read.

    ``refused``: True when the loader refused the file's content (a global or opcode
    outside its allow-list; nothing in it ran), False when the file is unreadable
    (truncated, not a torch file). ``str(error)`` is the detail, without a file name.
    """

    def __init__(self, detail: str, refused: bool) -> None:
        super().__init__(detail)
        self.refused = refused


def _refusal(error: Exception) -> str:
    """Why the loader refused a file, without torch's advice to turn the safety off:
    ``"the tensors-only loader refused it (Unsupported global: GLOBAL os.system);
    nothing in it was run"``."""
    found = re.search(r"Unsupported (?:operand \d+|global: GLOBAL \S+)|invalid load key[^\n]*",
                      str(error))
    detail = f" ({found.group(0)})" if found else ""
    return f"the tensors-only loader refused it{detail}; nothing in it was run"


def load_tensors(source: str | Path | bytes) -> Any:
    """``torch.load(source, map_location="cpu", weights_only=True)``: tensors on the CPU.

    ``source``: a file path, or the file's bytes (read once by a caller that also
    hashes them). Both torch's zip format and the legacy serialization load.
    Raises TorchFileError (see its ``refused``) for anything else.
    """
    data = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol warning: not a user error
            warnings.simplefilter("ignore")
            return torch.load(data, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's text advises weights_only=False: never
        raise TorchFileError(_refusal(e), refused=True) from None
    except Exception as e:  # truncated zip, not a torch file, torch's own errors
        raise TorchFileError(f"{type(e).__name__}: {first_line(e)[:200]}", refused=False) from None
