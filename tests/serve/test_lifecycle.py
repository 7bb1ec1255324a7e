"""Backpressure and shutdown of `elmo serve`: 429 when full, SIGTERM drains, drain timeout.

Requests are held deterministically by sending their headers and half their
body: such a request is *reading* (``elmo_requests_reading``) and holds no
``--max-concurrent-requests`` slot (a slow client cannot block the service); a
slot is taken once the body is in, for the model's work, so the 429 test fills
the slots with requests whose work takes seconds.
"""

from __future__ import annotations

import http.client
import json
import random
import signal
import socket
import threading
import time

import numpy as np
import pytest
from support.serve import Server, decode, expected, reference_embedders


@pytest.fixture(scope="session")
def offline():
    return reference_embedders()


TIMEOUT = 60.0
WORDS = "the bank raised rates as boats drift by a river bank at dawn"


class Held:
    """A POST whose body is half sent: in progress on the server until :meth:`finish`."""

    def __init__(self, server: Server, path: str, body: dict):
        self.body = json.dumps(body).encode()
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(self.body)}\r\n\r\n"
        ).encode()
        self.sock.sendall(head + self.body[: len(self.body) // 2])

    def finish(self) -> tuple[int, dict]:
        self.sock.sendall(self.body[len(self.body) // 2 :])
        response = http.client.HTTPResponse(self.sock)
        response.begin()
        data = response.read()
        self.sock.close()
        return response.status, json.loads(data)


def _wait_in_flight(server: Server, count: int, gauge: str = "elmo_requests_in_flight") -> None:
    key = (gauge, ())
    deadline = time.monotonic() + TIMEOUT
    while server.metrics().get(key, 0) < count:
        assert time.monotonic() < deadline, f"never {count} requests in flight"
        time.sleep(0.02)


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def _sentences(seed: int, count: int) -> list[list[str]]:
    rng = random.Random(seed)
    words = [
        "the",
        "bank",
        "raised",
        "rates",
        "as",
        "boats",
        "drift",
        "by",
        "a",
        "river",
        "bank",
        "at",
        "dawn",
    ]
    return [[rng.choice(words) for _ in range(rng.randint(1, 20))] for _ in range(count)]


def _long(seed: int, count: int = 16) -> list[list[str]]:
    """Sentences of 100 tokens never seen before (no token-cache hits): seconds of work."""
    rng = random.Random(seed)
    return [[f"{rng.choice(WORDS.split())}{rng.randint(0, 10**6)}" for _ in range(100)]
            for _ in range(count)]


def test_429_when_full_while_the_accepted_stay_correct(offline, serve):
    server = serve("--max-concurrent-requests", "2", "--mix", "top", "--token-cache", "0")
    try:
        answers: list[tuple[int, dict]] = [(0, {})] * 2

        def busy(k: int) -> None:
            answers[k] = server.post("/embed", {"inputs": _long(k), "pooling": "mean"}, key=None)

        workers = [threading.Thread(target=busy, args=(k,)) for k in range(2)]
        for t in workers:
            t.start()
        _wait_in_flight(server, 2)  # both bodies in: the two slots are taken by model work
        for path, body in (("/embed", {"inputs": ["a"]}), ("/v1/embeddings", {"input": "a"})):
            status, headers, answer = server.request("POST", path, body, key=None)
            assert status == 429 and headers.get("retry-after") == "1"
            error = json.loads(answer)["error"]
            assert "--max-concurrent-requests 2" in error["message"] and error["code"] == 429
        for t in workers:
            t.join(TIMEOUT)
        for k, (status, answer) in enumerate(answers):
            assert status == 200
            for tokens, got in zip(_long(k), answer["embeddings"], strict=True):
                np.testing.assert_allclose(
                    decode(got), expected(offline, tokens, "top", "mean"), atol=1e-5
                )
        assert server.request("GET", "/health")[0] == 200  # not an embedding request
        assert server.post("/embed", {"inputs": ["free again"]}, key=None)[0] == 200
        refused = ("elmo_requests_total", (("code", "429"), ("endpoint", "/embed")))
        assert server.metrics()[refused] == 1
    finally:
        assert server.stop() == 0


@pytest.mark.slow
def test_sigterm_under_load_answers_every_accepted_request(offline, serve):
    server = serve("--mix", "average")
    outcomes: list[tuple[str, object]] = []
    stop = threading.Event()

    def load(k: int) -> None:  # clients that keep asking until the service is gone
        rng = random.Random(100 + k)
        while not stop.is_set():
            sentences = _sentences(rng.randint(0, 10**6), rng.randint(1, 6))
            try:
                status, body = server.post("/embed", {"inputs": sentences}, key=None)
            except (ConnectionError, http.client.RemoteDisconnected, OSError):
                outcomes.append(("not accepted", None))  # refused or closed before accepting
                if _refused(server.port):
                    return
                continue
            outcomes.append(("answered", (status, sentences, body)))

    threads = [threading.Thread(target=load, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    held = [Held(server, "/embed", {"inputs": _sentences(k, 4)}) for k in range(6)]
    _wait_in_flight(server, 6, "elmo_requests_reading")
    server.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + TIMEOUT
    while not _refused(server.port):  # it stops accepting…
        assert time.monotonic() < deadline, "still accepting after SIGTERM"
        time.sleep(0.05)
    answers = [h.finish() for h in held]  # …and still answers what it accepted
    stop.set()
    for t in threads:
        t.join(TIMEOUT)
    assert server.proc.wait(TIMEOUT) == 0
    stderr = "".join(server.stderr)
    assert "Traceback" not in stderr and "drained and stopped" in stderr
    for k, (status, answer) in enumerate(answers):
        assert status == 200
        for tokens, got in zip(_sentences(k, 4), answer["embeddings"], strict=True):
            np.testing.assert_allclose(decode(got), expected(offline, tokens, "average"), atol=1e-5)
    answered = [x for kind, x in outcomes if kind == "answered"]
    assert answered, "the load clients got no answer before the shutdown"
    for status, sentences, body in answered:
        assert status == 200, body
        for tokens, got in zip(sentences, body["embeddings"], strict=True):
            np.testing.assert_allclose(decode(got), expected(offline, tokens, "average"), atol=1e-5)


def test_drain_timeout_bounds_the_shutdown(serve):
    """SIGINT (Ctrl-C) drains as SIGTERM does; the child has SIGINT's default disposition
    even when this runner ignores it (support.serve.start_server)."""
    server = serve("--drain-timeout", "1", "--body-timeout", "60")
    held = Held(server, "/embed", {"inputs": ["never finished"]})
    _wait_in_flight(server, 1, "elmo_requests_reading")
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(TIMEOUT) == 0  # without the timeout it would wait for the client
    # the unfinished request is answered: one line of JSON, 503 (was uvicorn's text/plain 500)
    response = http.client.HTTPResponse(held.sock)
    response.begin()
    assert response.status == 503 and response.getheader("content-type") == "application/json"
    error = json.loads(response.read())["error"]
    assert "--drain-timeout 1" in error["message"] and error["code"] == 503
    held.sock.close()
    stderr = "".join(server.stderr)
    assert "Traceback" not in stderr and "CancelledError" not in stderr, stderr
    assert "not drained: 1 request(s) answered 503" in stderr


def test_drain_timeout_bounds_answers_that_clients_do_not_read(serve):
    """An answer waiting for a client that does not read was not ended at --drain-timeout:
    uvicorn cancelled it 5 s later with a traceback each, and the stop line said
    'drained'. Now it is cut at the deadline (the client sees an incomplete answer)."""
    server = serve("--drain-timeout", "1", "--send-timeout", "60")
    body = json.dumps({"inputs": ["word " * 50] * 10}).encode()  # a 4 MB answer
    socks = []
    for _ in range(2):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(TIMEOUT)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                     b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        socks.append(sock)
    _wait_in_flight(server, 2)
    time.sleep(1.0)  # the answers are under way, blocked on the unread sockets
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(TIMEOUT) == 0
    elapsed = time.monotonic() - started
    for sock in socks:
        sock.close()
    stderr = "".join(server.stderr)
    assert "Traceback" not in stderr and "CancelledError" not in stderr, stderr
    assert "not drained: 2 request(s)" in stderr, stderr
    assert elapsed < 4.0, (elapsed, stderr)  # --drain-timeout 1, not 1 + 5 s of grace
