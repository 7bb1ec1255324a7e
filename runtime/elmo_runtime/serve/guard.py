"""Connection limits of `elmo serve`, below HTTP (uvicorn's h11 protocol, extended).

uvicorn bounds the idle time of a kept-alive connection (``--keep-alive-timeout``)
and the size of a request head (h11, 16 KiB), but a connection that never sends a
complete request head, an answer that a client never reads, and the number of open
connections are unbounded: ~1,100 idle sockets exhaust a 1,024 open-file limit and
every accept then fails. Here, per connection:

* **head deadline** (``--header-timeout``): from the connection's start, or from the
  first byte of a next request on a kept-alive connection, to the end of the request
  head; else it is closed (408 when part of a head had come);
* **send deadline** (``--send-timeout``; the drain deadline once draining): while the
  client does not take the answer (the transport's buffer is full, or holds the end of
  a complete answer) for that long, the connection is dropped, and the answer's memory
  with it, also once the connection is closing (a close waits for the client to read);
* **one framing**: a request with both ``Content-Length`` and ``Transfer-Encoding``
  (read as chunked) has its connection closed after the answer (RFC 9112 6.1): a proxy
  in front that reads the length would take what follows for its body (smuggling);
* **connection cap** (``--max-connections``, kept below the open-file limit with room
  for the accept burst): at the cap a new connection closes the connection idle the
  longest (no request in progress); only when none is idle is it answered 503 and
  closed.

Each event is counted in ``elmo_connections_closed_total{reason}`` (and the 503, 408 and
400 answers, the last for a request h11 cannot parse, in
``elmo_requests_total{endpoint="(connection)"}``); they are logged as one line per
:data:`LOG_INTERVAL` at most, never one line (or traceback) per event.
"""

from __future__ import annotations

import asyncio
import logging
import math
import resource
import time
from collections import Counter
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .metrics import Metrics
from .protocol import error_body

log = logging.getLogger("elmo.serve")

BACKLOG = 128  # listen queue, and connections asyncio accepts per loop turn
RESERVED_FILES = 2 * BACKLOG + 64  # accepted before we see them, plus the model, threads, pipes
LOG_INTERVAL = 10.0  # seconds between two log lines about refused or closed connections
ENDPOINT = "(connection)"  # the endpoint label of answers given before any request was read


def connection_cap(requested: int) -> tuple[int, int | None]:
    """``(cap, open-file limit)``: ``requested`` connections, lowered to leave
    :data:`RESERVED_FILES` of the process's open-file limit free. The soft limit is raised
    towards the hard one first when that is needed (as servers usually do)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = requested + RESERVED_FILES
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if target > soft:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (ValueError, OSError):
                pass
    if soft == resource.RLIM_INFINITY:
        return requested, None
    return max(1, min(requested, soft - RESERVED_FILES)), soft


def _raw_answer(status: int, reason: str, message: str) -> bytes:
    body = error_body(status, message)
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n")
    if status == 503:
        head += "retry-after: 1\r\n"
    return (head + "\r\n").encode() + body


class Guard:
    """The shared state of one server's connections: how many are open, which are idle
    (oldest first), the counters, and the throttled log."""

    def __init__(self, metrics: Metrics, max_connections: int, header_timeout: float,
                 send_timeout: float, requested: int | None = None,
                 file_limit: int | None = None, drain_timeout: float = float("inf")):
        self.metrics = metrics
        self.cap = max_connections
        self.header_timeout = header_timeout
        self.send_timeout = send_timeout
        self.drain_timeout = drain_timeout
        self.open = 0
        self.idle: dict[Any, None] = {}  # protocols without a request in progress, oldest first
        self._pending: Counter[str] = Counter()
        self._next_log = 0.0
        self._flush_handle: asyncio.TimerHandle | None = None
        limit = f", open-file limit {file_limit}" if file_limit else ""
        asked = f" (asked {requested})" if requested and requested != max_connections else ""
        self._where = f"--max-connections {max_connections}{asked}{limit}"
        message = f"{max_connections} connections open, the limit ({self._where}); retry later"
        self.refusal = _raw_answer(503, "Service Unavailable", message)
        self.timeout = _raw_answer(
            408, "Request Timeout",
            f"request head: not received within --header-timeout {header_timeout:g} s")

    def note(self, reason: str, status: int | None = None) -> None:
        """Count one closed connection (``status``: the answer it got, if any); log at most
        one line per :data:`LOG_INTERVAL`."""
        self.metrics.connections.labels(reason=reason).inc()
        if status is not None:
            self.metrics.observe_request(ENDPOINT, status, 0.0)
        self._pending[reason] += 1
        now = time.monotonic()
        if now >= self._next_log:
            self._flush()
        elif self._flush_handle is None:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(self._next_log - now, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if not self._pending:
            return
        counts = ", ".join(f"{n} {reason.replace('_', ' ')}"
                           for reason, n in sorted(self._pending.items()))
        log.warning("elmo serve: connections closed (%s): %s", self._where, counts)
        self._pending.clear()
        self._next_log = time.monotonic() + LOG_INTERVAL

    def evict_idle(self) -> bool:
        """Close the connection idle the longest; False when none is idle."""
        while self.idle:
            protocol = next(iter(self.idle))
            del self.idle[protocol]
            if not protocol.transport.is_closing():
                protocol.transport.abort()
                self.note("evicted")
                return True
        return False


def guarded_protocol(guard: Guard) -> type[H11Protocol]:
    """uvicorn's h11 protocol with ``guard``'s deadlines and cap (``uvicorn.Config(http=...)``)."""

    class Guarded(H11Protocol):
        _refused = False
        _head: asyncio.TimerHandle | None = None
        _send: asyncio.TimerHandle | None = None
        _drain_at = math.inf  # loop time of the drain deadline, once draining (SIGTERM)

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if guard.open >= guard.cap and not guard.evict_idle():
                self._refused = True
                transport.write(guard.refusal)
                transport.close()
                guard.note("refused", 503)
                return
            guard.open += 1
            super().connection_made(transport)
            guard.idle[self] = None
            self._arm_head()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._refused:
                return
            guard.open -= 1
            guard.idle.pop(self, None)
            for timer in (self._head, self._send):
                if timer is not None:
                    timer.cancel()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            between = self.cycle is None or self.cycle.response_complete
            if between and self._head is None:  # a next request starts on a kept-alive one
                self._arm_head()
            cycle = self.cycle
            super().data_received(data)
            if self.cycle is not cycle:  # a request head is complete: a request in progress
                self._disarm_head()
                guard.idle.pop(self, None)

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle and self.cycle is not None:  # a request head came
                names = {name for name, _ in self.headers}
                if {b"content-length", b"transfer-encoding"} <= names:
                    self.cycle.keep_alive = False  # closed after the answer (RFC 9112 6.1)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self._send is None and self.transport.get_write_buffer_size():
                self._set_send(guard.send_timeout)  # an answer not yet taken, maybe closing
            busy = self.cycle is not None and not self.cycle.response_complete  # pipelined
            if not busy and not self.transport.is_closing():
                guard.idle.pop(self, None)
                guard.idle[self] = None  # idle again, the newest
                if self.conn.trailing_data[0]:  # part of a next head came with this request:
                    self._unset_keepalive_if_required()  # not idle, its head deadline runs
                    self._arm_head()

        def send_400_response(self, msg: str) -> None:
            super().send_400_response(msg)
            guard.note("bad_request", 400)  # uvicorn's own line about it is filtered out

        def pause_writing(self) -> None:
            super().pause_writing()
            self._set_send(guard.send_timeout)

        def shutdown(self) -> None:
            """The drain began: what a client has not taken by ``--drain-timeout`` is dropped
            (uvicorn would wait for it, then cancel its task with a traceback)."""
            super().shutdown()
            self._drain_at = self.loop.time() + guard.drain_timeout
            if self._send is None or self._send.when() > self._drain_at:
                self._set_send(guard.drain_timeout)

        def resume_writing(self) -> None:
            super().resume_writing()
            if self._send is not None:
                self._send.cancel()
                self._send = None

        def _arm_head(self) -> None:
            self._disarm_head()
            self._head = self.loop.call_later(guard.header_timeout, self._head_expired)

        def _disarm_head(self) -> None:
            if self._head is not None:
                self._head.cancel()
                self._head = None

        def _head_expired(self) -> None:
            self._head = None
            if self.transport.is_closing():
                return
            # 408 only for part of a request head (h11 holds it unparsed); not for the rest
            # of a body whose request was answered already (413, 408), nor after it
            if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
                self.transport.write(guard.timeout)
                self.transport.close()
                guard.note("header_timeout", 408)
            else:
                self.transport.abort()
                guard.note("idle_timeout")

        def _set_send(self, wait: float) -> None:
            """The send deadline ``wait`` s from now (at the drain deadline at the latest)."""
            if self._send is not None:
                self._send.cancel()
            wait = max(0.0, min(wait, self._drain_at - self.loop.time()))
            self._send = self.loop.call_later(wait, self._send_expired)

        def _send_expired(self) -> None:
            # what is still unsent is dropped, also from a transport closing after its answer
            # (a close waits for the buffer to drain, for ever if the client does not read)
            self._send = None
            if self.transport.get_write_buffer_size():
                self.transport.abort()
                guard.note("send_timeout")

    return Guarded


class _NoPerRequestLine(logging.Filter):
    """Drops uvicorn's line per malformed request (they are counted and logged by the guard)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Invalid HTTP request received."


def quiet_accept_errors(guard: Guard) -> None:
    """On the running loop: an accept that fails for want of file descriptors is counted and
    logged with the others (one line per interval) instead of a traceback each time; so is a
    malformed request (uvicorn answers it 400)."""
    logging.getLogger("uvicorn.error").addFilter(_NoPerRequestLine())
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            guard.note("accept_failed")
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
