"""`elmo serve`: the click command and the uvicorn server with a clean drain.

Imported only when `elmo serve` runs (cli's LAZY_COMMANDS), so `elmo --help`
never loads the model, Starlette or uvicorn.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

import click

from ..cli.options import embedder_options, pop_settings
from ..cli.params import Finite
from ..errors import SERVE_HINT, ElmoError
from .config import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_KEEP_ALIVE_TIMEOUT,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_CLIENT_BATCH,
    DEFAULT_MAX_CONCURRENT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_INPUT_TOKENS,
    DEFAULT_MAX_RESPONSE_MB,
    DEFAULT_PAYLOAD_LIMIT,
    DEFAULT_PORT,
    DEFAULT_SEND_TIMEOUT,
    ServeConfig,
    loopback_names,
)

READY = "elmo serve: listening on http://{host}:{port}"
DRAIN_GRACE = 5.0  # seconds uvicorn waits beyond --drain-timeout before cancelling itself


def _server_class() -> type:
    import uvicorn

    from .guard import Guard, quiet_accept_errors
    from .service import Service

    class Server(uvicorn.Server):
        """uvicorn's server, draining on SIGTERM/SIGINT and then returning (exit status 0).

        uvicorn stops accepting, lets every accepted request finish (within
        ``timeout_graceful_shutdown``) and re-raises the signal afterwards;
        here the signal is not re-raised, so a drained service exits 0.
        """

        def __init__(self, config: uvicorn.Config, service: Service, guard: Guard) -> None:
            super().__init__(config)
            self.service = service
            self.guard = guard

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            from ..cli.progress import handled_signals

            with handled_signals(self.handle_exit):
                yield

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            self.service.begin_drain()  # the app answers 503 itself at the deadline
            super().handle_exit(sig, frame)

        async def startup(self, sockets: list | None = None) -> None:
            quiet_accept_errors(self.guard)
            await super().startup(sockets)
            for server in self.servers:
                for sock in server.sockets:
                    host, port = sock.getsockname()[:2]
                    click.echo(READY.format(host=host, port=port), err=True)

    return Server


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
MMAP_THRESHOLD = 256 * 1024  # bytes: larger blocks are mapped, and unmapped when freed


def return_freed_memory() -> None:
    """Fix glibc's mmap threshold (it otherwise rises to the largest block freed, up to
    32 MiB): the answers' blocks of a few MiB then go back to the system when freed instead
    of staying in the heap, so the service's RSS follows what it holds. No-op elsewhere."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "mallopt"):
            libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except OSError:
        pass


def check_port(host: str, port: int) -> None:
    """ElmoError (one line, exit 1) when ``host:port`` cannot be bound (in use, not allowed).

    Binds and closes a socket as uvicorn will (SO_REUSEADDR); port 0 is any free port.
    """
    import socket

    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as e:
        reason = "is in use" if e.errno == errno.EADDRINUSE else f"cannot be bound ({e.strerror})"
        raise ElmoError(f"elmo serve: port {port} on {host} {reason}; choose another --port") \
            from None


def run(config: ServeConfig, log_level: str = "warning", access_log: bool = False) -> None:
    """Load and warm up the model, then serve until SIGTERM/SIGINT (drained) or a bind error."""
    try:  # imported here: `elmo --help` stays fast and works without the extra
        import uvicorn

        from .app import create_app
        from .guard import BACKLOG, Guard, connection_cap, guarded_protocol
        from .service import Service
    except ImportError as e:
        raise ElmoError(
            f"`elmo serve` needs {e.name}, from the serve extra: {SERVE_HINT}"
        ) from None

    check_port(config.host, config.port)  # before the model loads: a busy port is one line
    return_freed_memory()
    service = Service(config)
    click.echo(
        f"elmo serve: {service.model_name} loaded and warmed up in {service.load_seconds:.2f} s "
        f"(mix {service.default_mix}, {service.n_layers} layers x {service.dim})",
        err=True,
    )
    cap, file_limit = connection_cap(config.max_connections)
    if cap < config.max_connections:
        click.echo(f"elmo serve: at most {cap} connections (--max-connections "
                   f"{config.max_connections}, open-file limit {file_limit})", err=True)
    guard = Guard(service.metrics, cap, config.header_timeout, config.send_timeout,
                  config.max_connections, file_limit, config.drain_timeout)
    uv_config = uvicorn.Config(
        create_app(service),
        host=config.host,
        port=config.port,
        log_level=log_level,
        access_log=access_log,
        # a backstop only: the app answers what is left 503 at config.drain_timeout
        timeout_graceful_shutdown=config.drain_timeout + DRAIN_GRACE,
        lifespan="on",
        loop="asyncio",
        http=guarded_protocol(guard),
        backlog=BACKLOG,
        timeout_keep_alive=config.keep_alive_timeout,
    )
    server = _server_class()(uv_config, service, guard)
    server.run()  # exits 1 itself when it cannot bind (after logging why)
    if service.cancelled:
        click.echo(
            f"elmo serve: stopped, not drained: {service.cancelled} request(s) answered 503 or "
            f"cut short at the drain deadline (--drain-timeout {config.drain_timeout:g})",
            err=True,
        )
    else:
        click.echo("elmo serve: drained and stopped", err=True)


def _limit(flag: str, default: int, help: str, metavar: str | None = None) -> Callable:
    """A ``--max-...`` option: a whole number >= 1 with its default shown."""
    return click.option(flag, type=click.IntRange(min=1), default=default, show_default=True,
                        metavar=metavar, help=help)


def _amount(*decls: str, default: float, help: str, metavar: str | None = None) -> Callable:
    """An option taking a finite number >= 0 (seconds, MiB) with its default shown."""
    return click.option(*decls, type=Finite(), default=default, show_default=True,
                        metavar=metavar, help=help)


@click.command("serve")
@embedder_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--tokenize/--no-tokenize",
    default=True,
    show_default=True,
    help="Strings go through the runtime's tokenizer (--no-tokenize: split on whitespace). "
    "Token lists are always used as given.",
)
@_limit("--max-batch-size", DEFAULT_MAX_BATCH_SIZE, "Sentences per model run.")
@_limit("--max-concurrent-requests", DEFAULT_MAX_CONCURRENT,
        "Embedding requests in progress at once; more are answered 429.")
@_limit("--max-client-batch-size", DEFAULT_MAX_CLIENT_BATCH,
        "Inputs per request; more are answered 413.")
@_limit("--max-input-tokens", DEFAULT_MAX_INPUT_TOKENS,
        "Tokens per input; a longer one is answered 413.")
@_limit("--payload-limit", DEFAULT_PAYLOAD_LIMIT,
        "Request body size; a larger one is answered 413.", metavar="BYTES")
@click.option(
    "--api-key",
    envvar="ELMO_API_KEY",
    help="Require 'Authorization: Bearer KEY' (except on /health) [env: ELMO_API_KEY].",
)
@click.option(
    "--cors-allow-origin",
    "cors",
    multiple=True,
    metavar="ORIGIN",
    help="Allowed CORS origin (repeatable).",
)
@_amount("--drain-timeout", default=DEFAULT_DRAIN_TIMEOUT,
         help="Seconds the accepted requests get to finish after SIGTERM/SIGINT; "
         "what is left then is answered 503.")
@_amount("--body-timeout", default=DEFAULT_BODY_TIMEOUT,
         help="Seconds a request body may take to arrive (408 after); a request takes a "
         "--max-concurrent-requests slot only once its body is in.")
@_amount("--header-timeout", default=DEFAULT_HEADER_TIMEOUT,
         help="Seconds from a connection (or a next request's first byte) to the end of the "
         "request head; the connection is closed after (408 if part of a head came).")
@_amount("--keep-alive-timeout", default=DEFAULT_KEEP_ALIVE_TIMEOUT,
         help="Seconds an idle kept-alive connection stays open.")
@_amount("--send-timeout", default=DEFAULT_SEND_TIMEOUT,
         help="Seconds an answer may wait for a client that does not read it; the "
         "connection is dropped after.")
@_limit("--max-connections", DEFAULT_MAX_CONNECTIONS,
        "Open connections (kept below the open-file limit); at the cap a new one closes the "
        "longest idle one, or gets 503 when none is idle.")
@_amount("--max-response-mb", default=DEFAULT_MAX_RESPONSE_MB, metavar="MIB",
         help="Largest answer, estimated from the request before any work; a larger one is "
         "answered 413.")
@click.option(
    "--allow-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="A name the Host header may carry (repeatable) [default: 127.0.0.1, localhost, ::1 "
    "when bound to loopback, any name otherwise]; others get 421 (DNS rebinding).",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="warning",
    show_default=True,
)
@click.option("--access-log", is_flag=True, help="Log every request (uvicorn's access log).")
def serve_command(
    host: str,
    port: int,
    tokenize: bool,
    max_batch_size: int,
    max_concurrent_requests: int,
    max_client_batch_size: int,
    max_input_tokens: int,
    payload_limit: int,
    api_key: str | None,
    cors: tuple[str, ...],
    drain_timeout: float,
    body_timeout: float,
    header_timeout: float,
    keep_alive_timeout: float,
    send_timeout: float,
    max_connections: int,
    max_response_mb: float,
    allowed_hosts: tuple[str, ...],
    log_level: str,
    access_log: bool,
    **embedder: Any,
) -> None:
    """Serve ELMo vectors over HTTP, batching concurrent requests (POST /embed, /v1/embeddings).

    The model is loaded and warmed up once; requests from every client are
    batched together by token budget whenever the model is free. SIGTERM or
    Ctrl-C stops accepting, answers every accepted request and exits 0. The
    mix (--all, --top, --average, --mix FILE) is the default of /embed;
    /v1/embeddings averages the tokens of this mix (of 'average' when it is
    'all'). The embedder options are `elmo embed`'s, with the same defaults.
    """
    if api_key is not None and not api_key.strip():
        raise click.BadParameter(
            "is empty (an unset shell variable or an empty ELMO_API_KEY=?); give a key, or leave "
            "the option out to serve without one", param_hint="--api-key")
    if api_key is None and loopback_names(host) is None:
        click.echo(f"Warning: elmo serve on {host} without --api-key: anyone who can reach this "
                   "address can use the service", err=True)
    config = ServeConfig(
        embedder=pop_settings(embedder),
        host=host,
        port=port,
        tokenize=tokenize,
        max_batch_size=max_batch_size,
        max_concurrent_requests=max_concurrent_requests,
        max_client_batch_size=max_client_batch_size,
        max_input_tokens=max_input_tokens,
        payload_limit=payload_limit,
        api_key=api_key,
        cors_allow_origins=cors,
        drain_timeout=drain_timeout,
        body_timeout=body_timeout,
        max_response_mb=max_response_mb,
        allowed_hosts=allowed_hosts,
        header_timeout=header_timeout,
        keep_alive_timeout=keep_alive_timeout,
        send_timeout=send_timeout,
        max_connections=max_connections,
    )
    run(config, log_level=log_level, access_log=access_log)
