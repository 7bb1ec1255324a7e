"""Errors a user can cause. The CLI prints them as one line, without a traceback."""


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
