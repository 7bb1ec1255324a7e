"""The HTTP side of `elmo serve`: a Starlette app over one :class:`Service`.

Routes: ``POST /embed``, ``POST /v1/embeddings`` (OpenAI-compatible),
``GET /health``, ``GET /info``, ``GET /metrics``. Every error is
``{"error": {"message": <one line>, "type": ..., "code": <status>}}``.

Defences (each answered with that one line of JSON): a ``Host`` that is not a
name of the service is 421 (DNS rebinding; loopback names only when bound to
loopback, else ``--allow-host``); an embedding POST whose Content-Type is not
``application/json`` is 415 (no CORS "simple request" from a web page); its body
must arrive within ``--body-timeout`` (408) and under ``--payload-limit`` (413)
*before* it takes one of the ``--max-concurrent-requests`` slots, so slow
clients hold no slot; an answer estimated over ``--max-response-mb`` is 413
before any work; a client that leaves is counted as 499, not 500; at the drain
deadline the unfinished requests are answered 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import first_line
from .config import host_allowed
from .metrics import CONTENT_TYPE
from .protocol import (
    ApiError,
    check_response_size,
    error_body,
    load_json,
    parse_embed,
    parse_openai,
    render_embed,
    render_openai,
)
from .service import Service

log = logging.getLogger("elmo.serve")
JSON = "application/json"
HEALTH_TIMEOUT = 10.0  # seconds the health probe may wait for the model
ENDPOINTS = ("/embed", "/v1/embeddings", "/health", "/info", "/metrics")

CLIENT_CLOSED = 499  # nginx's "client closed request": counted, never a 5xx or a traceback

Handler = Callable[[Request, bytes], Awaitable[Response]]  # a route given its read body
Endpoint = Callable[[Request], Awaitable[Response]]


def create_app(service: Service) -> Starlette:
    """The ASGI app; its lifespan starts and stops the service's batcher."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service.started()
        service.batcher.start()
        try:
            yield
        finally:
            await service.batcher.stop()

    def guarded(handler: Handler, embedding: bool = False, public: bool = False) -> Endpoint:
        async def route(request: Request) -> Response:
            try:
                if not public:
                    _check_key(request, service.config.api_key)
                if not embedding:
                    return await handler(request, b"")
                return await _until_drain_deadline(service, _embedding(request, handler))
            except ApiError as e:
                return _error(e.status, e.message)

        return route

    async def _embedding(request: Request, handler: Handler) -> Response:
        """Check the content type, read the body (deadline), then take a slot for the work."""
        _check_content_type(request)
        body = await _read_body(service, request)
        limit = service.config.max_concurrent_requests
        if service.in_flight >= limit:
            raise ApiError(
                429,
                f"{service.in_flight} requests in progress, the limit "
                f"(--max-concurrent-requests {limit}); retry later",
            )
        service.in_flight += 1
        service.metrics.in_flight.set(service.in_flight)
        try:
            return await handler(request, body)
        finally:
            service.in_flight -= 1
            service.metrics.in_flight.set(service.in_flight)

    async def embed(request: Request, raw: bytes) -> Response:
        parsed = parse_embed(load_json(raw), service.tokenizer, service.limits)
        mix = parsed.mix or service.default_mix
        per_token = service.n_layers if mix == "all" else 1
        check_response_size(
            [per_token * service.dim * (1 if parsed.pooling == "mean" else len(s))
             for s in parsed.sentences],
            parsed.encoding,
            service.config.max_response_mb,
        )
        vectors = await service.batcher.embed(parsed.sentences)
        body = await anyio.to_thread.run_sync(
            render_embed, vectors, service.mix(parsed.mix), parsed.pooling, parsed.encoding
        )
        return Response(body, media_type=JSON)

    async def openai(request: Request, raw: bytes) -> Response:
        parsed = parse_openai(load_json(raw), service.tokenizer, service.limits, service.dim)
        check_response_size(
            [service.dim] * len(parsed.sentences), parsed.encoding, service.config.max_response_mb
        )
        vectors = await service.batcher.embed(parsed.sentences)
        mix = service.mix(service.openai_mix)
        body = await anyio.to_thread.run_sync(
            render_openai, vectors, parsed.sentences, mix, service.model_name, parsed.encoding
        )
        return Response(body, media_type=JSON)

    async def health(request: Request, _: bytes) -> Response:
        if service.draining:
            return _error(503, "shutting down")
        try:
            await asyncio.wait_for(service.batcher.embed([["health"]]), HEALTH_TIMEOUT)
        except asyncio.TimeoutError:
            return _error(503, f"the model did not answer within {HEALTH_TIMEOUT:g} s")
        except Exception as e:
            return _error(503, f"the model failed: {first_line(e)}")
        return Response(orjson.dumps({"status": "ok"}), media_type=JSON)

    async def info(request: Request, _: bytes) -> Response:
        return Response(orjson.dumps(service.info()), media_type=JSON)

    async def metrics(request: Request, _: bytes) -> Response:
        service.metrics.queue_size.set(service.batcher.queued)
        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")

    async def internal_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, ClientDisconnect):  # the client left: not a server error
            return _error(CLIENT_CLOSED, "the client closed the connection")
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, f"internal error: {type(exc).__name__}: {first_line(exc)}")

    routes = [
        Route("/embed", guarded(embed, embedding=True), methods=["POST"]),
        Route("/v1/embeddings", guarded(openai, embedding=True), methods=["POST"]),
        Route("/health", guarded(health, public=True), methods=["GET"]),
        Route("/info", guarded(info), methods=["GET"]),
        Route("/metrics", guarded(metrics), methods=["GET"]),
    ]
    middleware = [Middleware(RequestMetrics, service=service)]
    hosts = service.config.host_names()
    if hosts is not None:  # outermost: a rebound DNS name never reaches a route
        middleware.insert(0, Middleware(HostCheck, hosts=hosts))
    if service.config.cors_allow_origins:
        middleware.insert(
            len(middleware) - 1,
            Middleware(
                CORSMiddleware,
                allow_origins=list(service.config.cors_allow_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type"],
            ),
        )
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: internal_error},
    )


class RequestMetrics:
    """ASGI middleware: counts every answered request by endpoint and status, and times it."""

    def __init__(self, app: ASGIApp, service: Service):
        self.app = app
        self.metrics = service.metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = path if path in ENDPOINTS else "other"
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.observe_request(endpoint, status, time.perf_counter() - started)


class HostCheck:
    """ASGI middleware: 421 (one line of JSON) unless the ``Host`` header names this service.

    Stops DNS rebinding: a page whose name was re-resolved to 127.0.0.1 sends its
    own name as ``Host``. Like Starlette's TrustedHostMiddleware, with a JSON answer.
    """

    def __init__(self, app: ASGIApp, hosts: tuple[str, ...]):
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
            if not host_allowed(host, self.hosts):
                message = (
                    f"Host header {host[:60]!r} is not a name of this service "
                    f"(allowed: {', '.join(self.hosts)}; add one with --allow-host)"
                )
                await _error(421, message)(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _until_drain_deadline(service: Service, work: Awaitable[Response]) -> Response:
    """``work``'s answer, or 503 (one line) when the drain deadline passes first."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(service.drain_deadline.wait())
    try:
        done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        stopper.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    service.cancelled += 1
    raise ApiError(
        503,
        f"shutting down: not answered within --drain-timeout {service.config.drain_timeout:g} s",
    )


def _check_content_type(request: Request) -> None:
    """415 unless the body is declared JSON: a text/plain POST from any web page
    (a CORS "simple request", no preflight) is refused."""
    given = request.headers.get("content-type")
    if given is None or given.partition(";")[0].strip().lower() != JSON:
        found = "none" if given is None else repr(given[:60])
        raise ApiError(415, f"Content-Type: expected {JSON}, found {found}")


async def _read_body(service: Service, request: Request) -> bytes:
    """The body within ``--body-timeout`` seconds (408 after), counted as reading, not in flight."""
    service.reading += 1
    service.metrics.reading.set(service.reading)
    timeout = service.config.body_timeout
    try:
        return await asyncio.wait_for(_body(request, service.config.payload_limit), timeout)
    except asyncio.TimeoutError:
        raise ApiError(
            408, f"request body: not received within --body-timeout {timeout:g} s"
        ) from None
    finally:
        service.reading -= 1
        service.metrics.reading.set(service.reading)


async def _body(request: Request, limit: int) -> bytes:
    """The request body; 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(
            413, f"request body: {int(declared)} bytes, more than --payload-limit {limit}"
        )
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"request body: more than --payload-limit {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(CLIENT_CLOSED, "the client closed the connection") from None
    return b"".join(chunks)


def _check_key(request: Request, key: str | None) -> None:
    if key is None:
        return
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    if not given:
        raise ApiError(401, "missing API key: send the header 'Authorization: Bearer <key>'")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        raise ApiError(401, "wrong API key in the Authorization header")


def _error(status: int, message: str) -> Response:
    headers = {"Retry-After": "1"} if status in (429, 503) else None
    return Response(
        error_body(status, message), status_code=status, media_type=JSON, headers=headers
    )
