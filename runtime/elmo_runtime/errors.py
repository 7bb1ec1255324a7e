"""Errors a user can cause, their one-line form, and the install hints.

The CLI prints every :class:`ElmoError` as ``Error: <message>`` (one line,
no traceback). :func:`first_line` is the one formatter that turns any other
exception (onnxruntime's, Ray's, a parser's) into one line for such a
message. :func:`pip_hint` and the ``*_HINT`` constants are the only place
that spells out which extra installs what.
"""

from __future__ import annotations


class ElmoError(Exception):
    """Base class: a problem with the user's input, model or environment."""


class OptionsError(ElmoError):
    """An options.json that does not describe a valid ELMo biLM."""


class ModelError(ElmoError):
    """A model file that is unreadable, not ONNX, or not an elmo-edge model."""


class InputError(ElmoError):
    """Input text that cannot be embedded (bad encoding, …)."""


class ProviderError(ElmoError):
    """An execution provider that was asked for and cannot be used."""


class MixError(ElmoError):
    """A scalar-mix file or value that does not fit the model."""


class UsageError(ElmoError):
    """Options that cannot go together (the CLI reports it as a usage error, exit 2)."""


class SettingError(ElmoError, ValueError):
    """An embedder setting out of its range, refused when the settings are made."""


class QuantizeError(ElmoError):
    """A model that cannot be quantized, or whose quantized outputs drift too far."""


class QuantizeWarning(UserWarning):
    """A quantized model written although it failed the check (``force``)."""


def first_line(error: BaseException) -> str:
    """The first non-blank line of ``str(error)``, or the exception's type name if it has none."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else type(error).__name__


def pip_hint(extra: str) -> str:
    """The command that installs an optional part: ``pip install 'elmo-edge[extra]'``."""
    return f"pip install 'elmo-edge[{extra}]'"


def missing_extra(command: str, extra: str, error: ImportError) -> ElmoError:
    """``elmo COMMAND`` could not import what ``extra`` installs: the one-line error
    "`elmo train` needs the export extra (torch is not installed): pip install …"."""
    return ElmoError(f"`elmo {command}` needs the {extra} extra "
                     f"({error.name or 'a module'} is not installed): {pip_hint(extra)}")


EXPORT_HINT = pip_hint("export")
CONVERT_HINT = pip_hint("convert")
SERVE_HINT = pip_hint("serve")
# One onnxruntime build at a time: both wheels provide the `onnxruntime` module.
GPU_HINT = "pip uninstall -y onnxruntime && pip install onnxruntime-gpu"
QUANTIZE_HINT = pip_hint("quantize")
H5PY_HINT = f"hdf5 output needs h5py: {pip_hint('hdf5')} (or use --format npz)"
PYARROW_HINT = f"Parquet output needs pyarrow: {pip_hint('parquet')}"
RAY_HINT = f"the ray engine needs Ray: {pip_hint('ray')}"
