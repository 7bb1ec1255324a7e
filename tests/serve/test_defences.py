"""`elmo serve` against hostile clients (breaker findings 5-7): slow bodies hold no slot,
oversized answers are refused up front, cross-site requests and rebound DNS names are
refused, a client that leaves is not a 500; every refusal is one line of JSON."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.serve import API_KEY, Server, start_server

TIMEOUT = 60.0
BODY_TIMEOUT = 2


@pytest.fixture(scope="module")
def guarded() -> Iterator[Server]:
    s = start_server(
        "--api-key", API_KEY,
        "--max-concurrent-requests", "2",
        "--body-timeout", str(BODY_TIMEOUT),
        "--max-response-mb", "1",
    )  # fmt: skip
    yield s
    assert s.stop() == 0, "".join(s.stderr)
    assert "Traceback" not in "".join(s.stderr)


def _slow_body(server: Server, headers: str = "") -> socket.socket:
    """A POST /embed that sends its headers and 5 of its 40 body bytes, then stalls."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    sock.sendall(
        (
            f"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {API_KEY}\r\nContent-Length: 40\r\n{headers}\r\n"
            '{"inp'
        ).encode()
    )
    return sock


def _answer(sock: socket.socket) -> tuple[int, dict]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    assert response.getheader("content-type") == "application/json"
    body = response.read()
    assert body.count(b"\n") == 0
    return response.status, json.loads(body)


def _metric(server: Server, name: str, **labels: str) -> float:
    return server.metrics().get((name, tuple(sorted(labels.items()))), 0.0)


def test_slow_bodies_hold_no_slot_and_time_out(guarded: Server) -> None:
    slow = [_slow_body(guarded) for _ in range(4)]  # twice --max-concurrent-requests
    deadline = time.monotonic() + TIMEOUT
    while _metric(guarded, "elmo_requests_reading") < 4:
        assert time.monotonic() < deadline, "the slow bodies never arrived"
        time.sleep(0.02)
    status, body = guarded.post("/embed", {"inputs": ["still served"], "mix": "top"})
    assert status == 200 and len(body["embeddings"][0]) == 2  # was 429: slots held forever
    for sock in slow:
        status, body = _answer(sock)  # within --body-timeout, not never
        assert status == 408, body
        assert f"--body-timeout {BODY_TIMEOUT}" in body["error"]["message"]
        sock.close()
    assert _metric(guarded, "elmo_requests_total", code="408", endpoint="/embed") == 4


def test_client_that_leaves_is_not_a_server_error(guarded: Server) -> None:
    sock = _slow_body(guarded)
    deadline = time.monotonic() + TIMEOUT
    while _metric(guarded, "elmo_requests_reading") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    sock.close()
    while _metric(guarded, "elmo_requests_total", code="499", endpoint="/embed") < 1:
        assert time.monotonic() < deadline, "the disconnect was never counted as 499"
        time.sleep(0.02)
    assert _metric(guarded, "elmo_requests_total", code="500", endpoint="/embed") == 0
    assert "Traceback" not in "".join(guarded.stderr)


def test_answer_larger_than_max_response_mb_is_413_before_work(guarded: Server) -> None:
    # 40 inputs x 60 tokens x 3 layers x 256 floats: about 21 MiB of JSON (was built in memory)
    batches_before = _metric(guarded, "elmo_batch_size_count")
    status, body = guarded.post("/embed", {"inputs": [["a"] * 60] * 40})
    assert status == 413
    message = body["error"]["message"]
    assert "1843200 values" in message and "--max-response-mb 1" in message
    assert _metric(guarded, "elmo_batch_size_count") == batches_before  # the model never ran
    # the same inputs pooled fit: 40 x 3 x 256 values
    status, body = guarded.post("/embed", {"inputs": [["a"] * 60] * 40, "pooling": "mean"})
    assert status == 200 and len(body["embeddings"]) == 40


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          None])
def test_embedding_posts_must_be_json(guarded: Server, content_type: str | None) -> None:
    conn = guarded.connect()
    headers = {"Authorization": f"Bearer {API_KEY}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    conn.request("POST", "/embed", body=b'{"inputs": [["secret"]]}', headers=headers)
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    assert response.status == 415
    assert body["error"]["message"].startswith("Content-Type: expected application/json")
    status, _ = guarded.post(
        "/embed", {"inputs": ["ok"]}, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert status == 200


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8080", "10.1.2.3"])
def test_foreign_host_header_is_421(guarded: Server, host: str) -> None:
    before = _metric(guarded, "elmo_requests_total", code="421", endpoint="/embed")
    for method, path, body in (("GET", "/info", None), ("POST", "/embed", {"inputs": ["a"]}),
                               ("GET", "/health", None)):
        status, _, data = guarded.request(method, path, body, headers={"Host": host})
        assert status == 421, data
        message = json.loads(data)["error"]["message"]
        assert "is not a name of this service" in message
        assert "(allowed: 127.0.0.1, localhost, ::1; add one" in message  # each name once
    assert _metric(guarded, "elmo_requests_total", code="421", endpoint="/embed") == before + 1


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost:{port}", "127.0.0.1:{port}",
                                  "[::1]:{port}", "LOCALHOST"])
def test_loopback_host_headers_are_served(guarded: Server, host: str) -> None:
    status, _, _ = guarded.request("GET", "/health",
                                   headers={"Host": host.format(port=guarded.port)})
    assert status == 200


def test_info_names_the_model_file_not_its_path(guarded: Server) -> None:
    from elmo_runtime.loading.model_file import resolve_model

    status, _, data = guarded.request("GET", "/info")
    info = json.loads(data)
    assert status == 200 and info["model"] == "default.onnx" and "model_path" not in info
    assert str(Path(resolve_model(None)).parent) not in data.decode()
    assert info["limits"]["body_timeout"] == BODY_TIMEOUT
    assert info["limits"]["max_response_mb"] == 1
    assert {k: info["limits"][k] for k in ("header_timeout", "keep_alive_timeout",
                                           "send_timeout", "max_connections")} == {
        "header_timeout": 10, "keep_alive_timeout": 5, "send_timeout": 30,
        "max_connections": 1000}


def test_allow_host_replaces_the_loopback_names() -> None:
    server = start_server("--allow-host", "elmo.internal")
    try:
        assert server.request("GET", "/health", headers={"Host": "elmo.internal:80"})[0] == 200
        assert server.request("GET", "/health", headers={"Host": "localhost"})[0] == 421
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("flag", ["--token-cache", "--drain-timeout", "--body-timeout",
                                  "--max-response-mb", "--header-timeout", "--send-timeout",
                                  "--keep-alive-timeout"])
@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_non_finite_numbers_refused_in_one_line(flag: str, value: str) -> None:
    from support.cli import run_elmo

    result = run_elmo("serve", flag, value)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "is not a finite number >= 0" in result.stderr.strip().splitlines()[-1]


def test_a_body_that_is_not_utf8_says_so(guarded: Server) -> None:
    status, _, data = guarded.request("POST", "/embed", raw=b'{"inputs": ["\xff\xfe"]}')
    assert status == 400
    assert json.loads(data)["error"]["message"] == (
        "request body: not valid UTF-8 (byte 0xff at offset 13)"  # was "str is not valid
    )  # UTF-8: surrogates not allowed", orjson's words about Python strings


@pytest.mark.parametrize("framing", [
    "Content-Length: 4\r\nTransfer-Encoding: chunked", "Transfer-Encoding: chunked"])
def test_a_request_framed_two_ways_closes_its_connection(guarded: Server, framing: str) -> None:
    """Content-Length and Transfer-Encoding together (or chunked in HTTP/1.0) are read as
    chunked, and the connection was kept for what followed: a proxy in front that reads
    the Content-Length sees the next request as this one's body (request smuggling).
    RFC 9112 6.1/6.3: the connection is closed after the answer."""
    body = json.dumps({"inputs": "hi"}).encode()
    version = "1.0" if "Length" not in framing else "1.1"
    head = (f"POST /embed HTTP/{version}\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {API_KEY}\r\nConnection: keep-alive\r\n{framing}\r\n\r\n")
    smuggled = b"GET /info HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + \
        API_KEY.encode() + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", guarded.port), timeout=TIMEOUT) as sock:
        sock.sendall(head.encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) + smuggled)
        data = b""
        while chunk := sock.recv(65536):  # the server closes it
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]
    assert data.count(b"HTTP/1.1 ") == 1 and b'"limits"' not in data, data[-300:]
