"""Settings of `elmo serve`; no third-party imports, so `elmo serve --help` needs no extra."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_PORT = 8080
DEFAULT_MAX_BATCH_SIZE = 64  # sentences per model run, as `elmo embed --batch-size`
DEFAULT_MAX_CONCURRENT = 512
DEFAULT_MAX_CLIENT_BATCH = 256
DEFAULT_MAX_INPUT_TOKENS = 1024
DEFAULT_PAYLOAD_LIMIT = 2_000_000  # bytes, as text-embeddings-inference
DEFAULT_DRAIN_TIMEOUT = 30.0  # seconds


@dataclass(frozen=True)
class ServeConfig:
    """Settings of one `elmo serve` (the command's flags).

    ``mix``: the default mix, "all", "top", "average" or a mix JSON file;
    ``tokenize``: strings go through :func:`elmo_runtime.tokenize.tokenize`
    (False: split on whitespace); ``max_batch_tokens``: padded steps per model
    run (None: the Embedder's default for the model's width); ``max_batch_size``:
    sentences per model run;
    ``payload_limit``: bytes; ``drain_timeout``: seconds.
    """

    model: str | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    mix: str = "all"
    tokenize: bool = True
    provider: str = "auto"
    threads: int | None = None
    token_cache_mb: float | None = None
    max_batch_tokens: int | None = None
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT
    max_client_batch_size: int = DEFAULT_MAX_CLIENT_BATCH
    max_input_tokens: int = DEFAULT_MAX_INPUT_TOKENS
    payload_limit: int = DEFAULT_PAYLOAD_LIMIT
    api_key: str | None = None
    cors_allow_origins: tuple[str, ...] = field(default_factory=tuple)
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
