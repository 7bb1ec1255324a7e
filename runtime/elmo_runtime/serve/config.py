"""Settings of `elmo serve`; no imports from its extra, so `elmo serve --help` needs none."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..settings import EmbedderSettings

DEFAULT_PORT = 8080
DEFAULT_MAX_BATCH_SIZE = 64  # sentences per model run, as `elmo embed --batch-size`
DEFAULT_MAX_CONCURRENT = 512
DEFAULT_MAX_CLIENT_BATCH = 256
DEFAULT_MAX_INPUT_TOKENS = 1024
DEFAULT_PAYLOAD_LIMIT = 2_000_000  # bytes, as text-embeddings-inference
DEFAULT_DRAIN_TIMEOUT = 30.0  # seconds
DEFAULT_BODY_TIMEOUT = 10.0  # seconds a client gets to send its whole request body
DEFAULT_MAX_RESPONSE_MB = 100.0  # MiB of JSON one answer may take (estimated before the work)
DEFAULT_HEADER_TIMEOUT = 10.0  # seconds from a connection (or a request's first byte) to its head
DEFAULT_KEEP_ALIVE_TIMEOUT = 5.0  # seconds an idle kept-alive connection stays open
DEFAULT_SEND_TIMEOUT = 30.0  # seconds an answer may wait for a client that does not read
DEFAULT_MAX_CONNECTIONS = 1000  # open connections (also kept below the open-file limit)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServeConfig:
    """Settings of one `elmo serve` (the command's flags).

    ``embedder``: the model, provider, threads, token cache, batch token cap
    (padded steps per model run; None: the model's default) and the default
    mix of /embed, as `elmo embed` takes them
    (:class:`~elmo_runtime.settings.EmbedderSettings`);
    ``tokenize``: strings go through :func:`elmo_runtime.tokenize.tokenize`
    (False: split on whitespace); ``max_batch_size``: sentences per model run;
    ``payload_limit``: bytes; ``drain_timeout``: seconds; ``body_timeout``: seconds a
    request body may take to arrive (408 after); ``max_response_mb``: MiB an answer may take,
    estimated from the request before any work (413 above); ``allowed_hosts``: the names a
    ``Host`` header may carry (empty: :data:`LOOPBACK_HOSTS` when bound to a loopback
    address, any otherwise); ``header_timeout``, ``keep_alive_timeout``, ``send_timeout``
    (seconds) and ``max_connections``: the connection limits of :mod:`.guard`.
    """

    embedder: EmbedderSettings = field(default_factory=EmbedderSettings)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    tokenize: bool = True
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT
    max_client_batch_size: int = DEFAULT_MAX_CLIENT_BATCH
    max_input_tokens: int = DEFAULT_MAX_INPUT_TOKENS
    payload_limit: int = DEFAULT_PAYLOAD_LIMIT
    api_key: str | None = None
    cors_allow_origins: tuple[str, ...] = field(default_factory=tuple)
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    max_response_mb: float = DEFAULT_MAX_RESPONSE_MB
    allowed_hosts: tuple[str, ...] = field(default_factory=tuple)
    # connection limits (serve/guard.py); seconds, and a number of connections
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    keep_alive_timeout: float = DEFAULT_KEEP_ALIVE_TIMEOUT
    send_timeout: float = DEFAULT_SEND_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    def connection_limits(self) -> dict[str, float]:
        """The connection-level limits by name (for ``/info``)."""
        return {"header_timeout": self.header_timeout,
                "keep_alive_timeout": self.keep_alive_timeout,
                "send_timeout": self.send_timeout, "max_connections": self.max_connections}

    def host_names(self) -> tuple[str, ...] | None:
        """The ``Host`` names accepted (lower case, no port), or None for any."""
        if self.allowed_hosts:
            return tuple(h.lower().strip("[]") for h in self.allowed_hosts)
        return loopback_names(self.host)


def loopback_names(bound: str) -> tuple[str, ...] | None:
    """The ``Host`` names of a server bound to address ``bound``: the loopback names when it
    is a loopback address (``127.0.0.1``, ``::1``, ``localhost``, ``127.x.y.z``), else None (any).

    `elmo serve` (without ``--allow-host``) and `elmo web` both answer only these names.
    """
    name = bound.strip("[]").lower()
    if name in LOOPBACK_HOSTS:
        return LOOPBACK_HOSTS
    if name.startswith("127."):
        return (*LOOPBACK_HOSTS, name)
    return None


def host_name(host: str) -> str:
    """The name part of a ``Host`` header value: ``[::1]:8080`` -> ``::1``, ``a:80`` -> ``a``."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def host_allowed(host: str, names: tuple[str, ...]) -> bool:
    """Whether a ``Host`` header value (any case, with or without a port) is one of ``names``.

    A request without ``Host`` (HTTP/1.0) passes: browsers always send one, so a
    DNS-rebinding page cannot omit it.
    """
    return not host or host_name(host.lower()) in names
