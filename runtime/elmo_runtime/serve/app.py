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
clients hold no slot, and it keeps the slot until its answer is sent (:mod:`.answer`
parses, queues and streams it); an answer estimated over ``--max-response-mb`` is 413
before any work; a client that leaves is counted as 499, not 500, and its queued work
is dropped; at the drain deadline the unfinished requests are answered 503. Every
answer, 421 included, is counted in ``/metrics``. The connection-level limits
(header, idle and send deadlines, the connection cap) are in :mod:`.guard`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import NoReturn

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
from .answer import (
    CLIENT_CLOSED,
    STATUS_KEY,
    Answer,
    Deadline,
    Gone,
    Plan,
    Stream,
    plan_embed,
    plan_openai,
    race,
    watch_disconnect,
)
from .config import host_allowed
from .metrics import CONTENT_TYPE
from .protocol import ApiError, error_body
from .service import Service

log = logging.getLogger("elmo.serve")
JSON = "application/json"
HEALTH_TIMEOUT = 10.0  # seconds the health probe may wait for the model
ENDPOINTS = ("/embed", "/v1/embeddings", "/health", "/info", "/metrics")

Handler = Callable[[Request, bytes], Awaitable[Response]]  # a route given its read body
Endpoint = Callable[[Request], Awaitable[Response]]


def create_app(service: Service) -> Starlette:
    """The ASGI app; its lifespan starts and stops the service's batcher."""

    cpu = ThreadPoolExecutor(max_workers=1, thread_name_prefix="elmo-cpu")  # parse, render

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service.started()
        service.batcher.start()
        try:
            yield
        finally:
            await service.batcher.stop()
            cpu.shutdown(wait=True)

    def guarded(handler: Handler, public: bool = False) -> Endpoint:
        async def route(request: Request) -> Response:
            try:
                if not public:
                    _check_key(request, service.config.api_key)
                return await handler(request, b"")
            except ApiError as e:
                return _error(e.status, e.message)

        return route

    def embedding(plan: Callable[[bytes, Service], Plan]) -> Endpoint:
        async def route(request: Request) -> Response:
            try:
                _check_key(request, service.config.api_key)
                return await _answer(service, cpu, request, plan)
            except ApiError as e:
                return _error(e.status, e.message)

        return route

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
        Route("/embed", embedding(plan_embed), methods=["POST"]),
        Route("/v1/embeddings", embedding(plan_openai), methods=["POST"]),
        Route("/health", guarded(health, public=True), methods=["GET"]),
        Route("/info", guarded(info), methods=["GET"]),
        Route("/metrics", guarded(metrics), methods=["GET"]),
    ]
    middleware = [Middleware(RequestMetrics, service=service)]  # outermost: counts every answer
    hosts = service.config.host_names()
    if hosts is not None:  # next: a rebound DNS name never reaches a route
        middleware.append(Middleware(HostCheck, hosts=hosts))
    if service.config.cors_allow_origins:
        middleware.append(
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
            status = scope.get(STATUS_KEY, status)
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


async def _answer(
    service: Service, cpu: Executor, request: Request, plan: Callable[[bytes, Service], Plan]
) -> Response:
    """An embedding request: content type, body (deadline, size), a slot (429), then the work,
    watched for the client leaving (499) and for the drain deadline (503). The slot is held
    until the answer is sent."""
    _check_content_type(request)
    deadline = service.drain_deadline
    try:
        body = await race(_read_body(service, request), None, deadline)
    except Deadline:
        _drain_deadline(service)
    release = _take_slot(service)
    gone = asyncio.ensure_future(watch_disconnect(request.receive))
    stream: Stream | None = None
    handed = False  # the answer releases the slot once sent

    def done(outcome: str | None) -> None:
        gone.cancel()
        if stream is not None:
            stream.close()
        if outcome == "deadline":
            service.cancelled += 1
        release()

    try:
        loop = asyncio.get_running_loop()
        parsed = await race(loop.run_in_executor(cpu, plan, body, service), gone, deadline)
        stream = Stream(service.batcher, parsed, cpu)
        items = await race(stream.next(), gone, deadline)
        handed = True
        return Answer(b"" if items is None else items, stream, gone, deadline, done)
    except Gone:
        raise ApiError(CLIENT_CLOSED, "the client closed the connection") from None
    except Deadline:
        _drain_deadline(service)
    finally:
        if not handed:
            done(None)


def _drain_deadline(service: Service) -> NoReturn:
    """503 for a request still unanswered at the drain deadline (counted as cancelled)."""
    service.cancelled += 1
    timeout = service.config.drain_timeout
    raise ApiError(503, f"shutting down: not answered within --drain-timeout {timeout:g} s")


def _take_slot(service: Service) -> Callable[[], None]:
    """One of the ``--max-concurrent-requests`` slots (429 when none is free); the returned
    function gives it back (once)."""
    limit = service.config.max_concurrent_requests
    if service.in_flight >= limit:
        raise ApiError(
            429,
            f"{service.in_flight} requests in progress, the limit "
            f"(--max-concurrent-requests {limit}); retry later",
        )
    service.in_flight += 1
    service.metrics.in_flight.set(service.in_flight)
    held = [True]

    def release() -> None:
        if held.pop() if held else False:
            service.in_flight -= 1
            service.metrics.in_flight.set(service.in_flight)

    return release


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
