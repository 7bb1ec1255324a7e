"""The HTTP side of `elmo serve`: a Starlette app over one :class:`Service`.

Routes: ``POST /embed``, ``POST /v1/embeddings`` (OpenAI-compatible),
``GET /health``, ``GET /info``, ``GET /metrics``. Every error is
``{"error": {"message": <one line>, "type": ..., "code": <status>}}``.
"""

from __future__ import annotations

import asyncio
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
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import first_line
from .metrics import CONTENT_TYPE
from .protocol import (
    ApiError,
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

Handler = Callable[[Request], Awaitable[Response]]


def create_app(service: Service) -> Starlette:
    """The ASGI app; its lifespan starts and stops the service's batcher."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service.batcher.start()
        try:
            yield
        finally:
            await service.batcher.stop()

    def guarded(handler: Handler, embedding: bool = False, public: bool = False) -> Handler:
        async def route(request: Request) -> Response:
            try:
                if not public:
                    _check_key(request, service.config.api_key)
                if not embedding:
                    return await handler(request)
                if service.in_flight >= service.config.max_concurrent_requests:
                    raise ApiError(
                        429,
                        f"{service.in_flight} requests in progress, the limit "
                        f"(--max-concurrent-requests {service.config.max_concurrent_requests}); "
                        "retry later",
                    )
                service.in_flight += 1
                service.metrics.in_flight.set(service.in_flight)
                try:
                    return await handler(request)
                finally:
                    service.in_flight -= 1
                    service.metrics.in_flight.set(service.in_flight)
            except ApiError as e:
                return _error(e.status, e.message)

        return route

    async def embed(request: Request) -> Response:
        data = load_json(await _body(request, service.config.payload_limit))
        parsed = parse_embed(data, service.tokenizer, service.limits)
        vectors = await service.batcher.embed(parsed.sentences)
        mix = service.mix(parsed.mix)
        body = await anyio.to_thread.run_sync(
            render_embed, vectors, mix, parsed.pooling, parsed.encoding
        )
        return Response(body, media_type=JSON)

    async def openai(request: Request) -> Response:
        data = load_json(await _body(request, service.config.payload_limit))
        parsed = parse_openai(data, service.tokenizer, service.limits, service.dim)
        vectors = await service.batcher.embed(parsed.sentences)
        mix = service.mix(service.openai_mix)
        body = await anyio.to_thread.run_sync(
            render_openai, vectors, parsed.sentences, mix, service.model_name, parsed.encoding
        )
        return Response(body, media_type=JSON)

    async def health(request: Request) -> Response:
        if service.draining:
            return _error(503, "shutting down")
        try:
            await asyncio.wait_for(service.batcher.embed([["health"]]), HEALTH_TIMEOUT)
        except asyncio.TimeoutError:
            return _error(503, f"the model did not answer within {HEALTH_TIMEOUT:g} s")
        except Exception as e:
            return _error(503, f"the model failed: {first_line(e)}")
        return Response(orjson.dumps({"status": "ok"}), media_type=JSON)

    async def info(request: Request) -> Response:
        return Response(orjson.dumps(service.info()), media_type=JSON)

    async def metrics(request: Request) -> Response:
        service.metrics.queue_size.set(service.batcher.queued)
        return Response(service.metrics.exposition(), media_type=CONTENT_TYPE)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")

    async def internal_error(request: Request, exc: Exception) -> Response:
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
    if service.config.cors_allow_origins:
        middleware.insert(
            0,
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


async def _body(request: Request, limit: int) -> bytes:
    """The request body; 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(
            413, f"request body: {int(declared)} bytes, more than --payload-limit {limit}"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body: more than --payload-limit {limit} bytes")
        chunks.append(chunk)
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
