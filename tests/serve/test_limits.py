"""`elmo serve` bounds what a client can hold (issue 23): connections, deadlines, memory,
the event loop and the model's queue. Each test is bounded in count and time; the timing
bounds are the issue's, measured on loopback on a shared 2-core machine."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import threading
import time

import numpy as np
import pytest
from support.serve import Server, decode, expected, reference_embedders, start_server

TIMEOUT = 60.0


def _metric(server: Server, name: str, **labels: str) -> float:
    return server.metrics().get((name, tuple(sorted(labels.items()))), 0.0)


def _wait_for(check, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _rss_mib(server: Server) -> float:
    with open(f"/proc/{server.proc.pid}/status", encoding="ascii") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kib / 1024


def _post_raw(port: int, body: bytes, rcvbuf: int | None = None) -> socket.socket:
    """A POST /embed sent whole on a socket nobody reads from (``rcvbuf``: its receive buffer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    )
    return sock


def _closed_within(sock: socket.socket, seconds: float) -> tuple[float, bytes]:
    """Seconds until the server closed ``sock`` (reading what it sent), and what it sent."""
    sock.settimeout(seconds)
    started, data = time.monotonic(), b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return time.monotonic() - started, data


@pytest.mark.slow
def test_idle_sockets_at_the_file_limit_lock_no_one_out():
    """1,200 sockets that send nothing, against a server with a 1,024 open-file limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1400:
        pytest.skip(f"this test process may open {hard} files, the test needs 1,400")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1400), hard))
    server = start_server("--mix", "top", file_limit=1024)
    startup_lines = len(server.stderr)
    socks = []
    try:
        for _ in range(1200):
            socks.append(socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT))
        started = time.monotonic()
        status, body = server.post("/embed", {"inputs": ["still served"]}, key=None)
        seconds = time.monotonic() - started
        assert status == 200 and len(body["embeddings"][0]) == 2  # two tokens
        assert seconds < 2.0, f"a normal request took {seconds:.2f} s"
        assert _metric(server, "elmo_connections_closed_total", reason="evicted") > 0
    finally:
        for sock in socks:
            sock.close()
        stopped = server.stop()
    assert stopped == 0
    lines = server.stderr[startup_lines:]
    assert len(lines) < 20, "".join(lines[:40])
    assert "Traceback" not in "".join(lines) and "Errno 24" not in "".join(lines)
    assert any("evicted" in line and "open-file limit 1024" in line for line in lines), lines


def test_at_the_connection_cap_idle_ones_make_room_and_busy_ones_get_503():
    server = start_server("--max-connections", "2", "--body-timeout", "30")
    try:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
                for _ in range(2)]
        assert server.request("GET", "/health", key=None)[0] == 200  # one idle one closed
        busy = [_send(server, b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                              b"application/json\r\nContent-Length: 40\r\n\r\n{")
                for _ in range(2)]  # requests in progress (bodies never finished)
        time.sleep(2.0)  # their heads are read (no request can ask: both places are taken)
        refused = _send(server, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data = _closed_within(refused, 10)[1]
        assert data.startswith(b"HTTP/1.1 503 "), data
        assert b"the limit (--max-connections 2, " in data and data.count(b"\n") == 6, data
        for sock in idle + busy:
            sock.close()
        _wait_for(lambda: server.request("GET", "/health", key=None)[0] == 200, "no room again")
        closed = {reason: _metric(server, "elmo_connections_closed_total", reason=reason)
                  for reason in ("evicted", "refused")}
        assert closed["evicted"] >= 2 and closed["refused"] >= 1, closed
        assert _metric(server, "elmo_requests_total", code="503", endpoint="(connection)") >= 1
    finally:
        assert server.stop() == 0
    assert "Traceback" not in "".join(server.stderr)


def test_malformed_requests_are_counted_and_logged_once():
    server = start_server()
    startup_lines = len(server.stderr)
    try:
        for _ in range(30):
            data = _closed_within(_send(server, b"NOT HTTP AT ALL\r\n\r\n"), 10)[1]
            assert data.startswith(b"HTTP/1.1 400 "), data
        assert _metric(server, "elmo_requests_total", code="400", endpoint="(connection)") == 30
    finally:
        assert server.stop() == 0
    lines = server.stderr[startup_lines:]
    assert len(lines) <= 4 and "bad request" in "".join(lines), lines  # not one line each
    assert not any("Invalid HTTP request" in line for line in lines), lines


def test_slow_and_idle_clients_are_cut_at_their_deadlines():
    server = start_server("--header-timeout", "1", "--body-timeout", "1",
                          "--keep-alive-timeout", "1")
    try:
        idle = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
        slow_head = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
        slow_head.sendall(b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
        slow_body = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
        slow_body.sendall(b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                          b"application/json\r\nContent-Length: 40\r\n\r\n{\"inp")
        for sock, answer in ((idle, b""), (slow_head, b"HTTP/1.1 408 "),
                             (slow_body, b"HTTP/1.1 408 ")):
            seconds, data = _closed_within(sock, 10)
            assert seconds < 3.0, f"{answer!r}: open {seconds:.1f} s past a 1 s deadline"
            assert data.startswith(answer), data
            sock.close()
        assert b"--header-timeout 1 s" in _closed_within(
            _send(server, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /he"), 10)[1]
        counts = {reason: _metric(server, "elmo_connections_closed_total", reason=reason)
                  for reason in ("idle_timeout", "header_timeout")}
        assert counts == {"idle_timeout": 1, "header_timeout": 2}, counts
        assert _metric(server, "elmo_requests_total", code="408", endpoint="(connection)") == 2
        assert _metric(server, "elmo_requests_total", code="408", endpoint="/embed") == 1
    finally:
        assert server.stop() == 0
    assert "Traceback" not in "".join(server.stderr)


def test_the_rest_of_a_refused_body_gets_no_second_answer():
    """A body still coming after its request was answered (408 at --body-timeout, 413 over
    --payload-limit) armed the head deadline as if it were a next request's head: the
    connection got a second, unsolicited 408 and /metrics counted it."""
    server = start_server("--header-timeout", "1", "--body-timeout", "1",
                          "--payload-limit", "100")
    head = (b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n")
    try:
        slow = _send(server, head % 40 + b"{")
        slow.settimeout(10)
        first = slow.recv(65536)
        assert first.startswith(b"HTTP/1.1 408 "), first
        for _ in range(8):  # the rest of the body, slowly
            with contextlib.suppress(OSError):
                slow.send(b" ")
            time.sleep(0.3)
        large = _send(server, head % 1000)
        large.settimeout(10)
        first_large = large.recv(65536)
        assert first_large.startswith(b"HTTP/1.1 413 "), first_large
        large.sendall(b" " * 1000)  # then nothing: an idle connection
        for sock, answered in ((slow, first), (large, first_large)):
            seconds, rest = _closed_within(sock, 10)
            assert seconds < 5 and (answered + rest).count(b"HTTP/1.1 ") == 1, answered + rest
            sock.close()
        assert _metric(server, "elmo_requests_total", code="408", endpoint="(connection)") == 0
    finally:
        assert server.stop() == 0
    assert "Traceback" not in "".join(server.stderr)


@pytest.mark.slow
def test_answers_left_unread_in_a_closing_connection_are_dropped():
    """An answer sent in full into the connection's buffer (not over its high-water mark,
    so never a paused write) and then closed by the keep-alive deadline waited for the
    client to read it, for ever: its socket and connection were held past --send-timeout
    (4 of these 135 sizes, measured on loopback: 14 descriptors left, 10 before). Answers of
    2.3-4.8 MB, around what the kernel's buffers take on loopback, none of them read."""
    server = start_server("--send-timeout", "2", "--keep-alive-timeout", "2")
    try:
        before = len(os.listdir(f"/proc/{server.proc.pid}/fd"))
        socks = []
        for n in range(250, 520, 2):
            body = json.dumps({"inputs": [["w"] * n]}).encode()
            socks.append(_post_raw(server.port, body, rcvbuf=4096))
            time.sleep(0.03)
        _wait_for(lambda: _metric(server, "elmo_requests_in_flight") == 0, "never answered")
        time.sleep(6.0)  # the keep-alive (2 s) and send (2 s) deadlines, with room
        held = len(os.listdir(f"/proc/{server.proc.pid}/fd")) - before
        assert held <= 0, f"{held} sockets still held past --send-timeout"
        for sock in socks:
            sock.close()
    finally:
        assert server.stop() == 0
    assert "Traceback" not in "".join(server.stderr)


def _send(server: Server, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    sock.sendall(data)
    return sock


@pytest.mark.slow
def test_clients_that_never_read_hold_little_memory():
    """8 clients post ~75 KB each (an answer of ~55 MiB of JSON) and never read it."""
    server = start_server("--mix", "top", "--send-timeout", "20", "--token-cache", "0")
    request = {"inputs": [["word"] * 1000] * 18}  # 18,000 tokens
    body = json.dumps(request).encode()
    try:
        assert server.post("/embed", request, key=None)[0] == 200  # one read, then idle
        idle = _rss_mib(server)
        socks = [_post_raw(server.port, body, rcvbuf=4096) for _ in range(8)]
        _wait_for(lambda: _metric(server, "elmo_requests_in_flight") == 8, "never 8 in flight")
        peak, last, still = idle, -1.0, 0
        while still < 4:  # until the service has done what it can for them (no new tokens)
            time.sleep(0.5)
            tokens = _metric(server, "elmo_tokens_embedded_total")
            still = still + 1 if tokens == last else 0
            last = tokens
            peak = max(peak, _rss_mib(server))
        held = _rss_mib(server)  # what the 8 clients hold once the service can do no more
        assert last < 8 * 18_000, "the answers were computed although nobody read them"
        assert held - idle < 100, f"RSS {idle:.0f} -> {held:.0f} MiB held (peak {peak:.0f})"
        _wait_for(lambda: _metric(server, "elmo_connections_closed_total",
                                  reason="send_timeout") == 8, "not cut at --send-timeout")
        assert _metric(server, "elmo_requests_in_flight") == 0  # the slots are free again
        for sock in socks:
            sock.close()
        assert server.post("/embed", {"inputs": ["free"]}, key=None)[0] == 200
    finally:
        assert server.stop() == 0
    assert "Traceback" not in "".join(server.stderr)


@pytest.mark.slow
def test_large_punctuation_bodies_leave_health_answering():
    """24 concurrent 1.9 MB bodies of punctuation (each one 413) and /health meanwhile."""
    server = start_server()
    body = json.dumps({"inputs": ["!?" * 950_000]}).encode()
    assert 1_850_000 < len(body) < 2_000_000
    statuses: list[int] = []
    health: list[float] = []
    try:
        def post() -> None:
            conn = server.connect()
            conn.request("POST", "/embed", body, {"Content-Type": "application/json"})
            statuses.append(conn.getresponse().status)
            conn.close()

        threads = [threading.Thread(target=post) for _ in range(24)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads) or len(health) < 5:
            started = time.monotonic()
            assert server.request("GET", "/health")[0] == 200
            health.append(time.monotonic() - started)
        for t in threads:
            t.join(TIMEOUT)
        assert statuses == [413] * 24
        # 1 s is the aim; the slowest probe gets 3 s on a shared, overloaded 2-core machine
        # (was 18.6 s: the strings were tokenized on the event loop)
        assert sorted(health)[len(health) // 2] < 1.0 and max(health) < 3.0, health
    finally:
        assert server.stop() == 0


def test_abandoned_large_requests_are_dropped_and_counted_499():
    """Four ~200 KB requests whose clients hang up, then a one-word request (model runs of
    at most 512 padded steps: the one in progress when it comes is waited for)."""
    server = start_server("--mix", "top", "--max-batch-tokens", "512", "--token-cache", "0")
    body = json.dumps({"inputs": [["word"] * 100] * 250, "encoding_format": "base64"}).encode()
    assert len(body) > 200_000
    try:
        socks = [_post_raw(server.port, body) for _ in range(4)]
        _wait_for(lambda: _metric(server, "elmo_requests_in_flight") == 4, "never 4 in flight")
        for sock in socks:
            sock.close()
        _wait_for(lambda: _metric(server, "elmo_requests_total", code="499",
                                  endpoint="/embed") == 4, "the hang-ups were not counted 499")
        started = time.monotonic()
        status, answer = server.post("/embed", {"inputs": [["small"]]}, key=None)
        seconds = time.monotonic() - started
        runs = _metric(server, "elmo_batch_duration_seconds_sum") / _metric(
            server, "elmo_batch_duration_seconds_count")
        assert status == 200 and seconds < 1.0, f"{status}, {seconds:.2f} s (a run: {runs:.2f} s)"
        assert _metric(server, "elmo_tokens_embedded_total") < 4 * 25_000 / 4  # dropped
        assert _metric(server, "elmo_requests_total", code="200", endpoint="/embed") == 1
    finally:
        assert server.stop() == 0
    assert "Traceback" not in "".join(server.stderr)


@pytest.mark.slow
def test_a_small_request_is_not_queued_behind_large_ones():
    """The fair queue: a one-word request while two large ones are being embedded."""
    server = start_server("--mix", "top", "--max-batch-tokens", "512", "--token-cache", "0")
    body = {"inputs": [["word"] * 100] * 120, "encoding_format": "base64"}
    done: list[int] = []
    try:
        def large() -> None:
            done.append(server.post("/embed", body, key=None)[0])

        threads = [threading.Thread(target=large) for _ in range(2)]
        for t in threads:
            t.start()
        _wait_for(lambda: _metric(server, "elmo_batch_size_count") >= 2, "no model run")
        started = time.monotonic()
        assert server.post("/embed", {"inputs": [["small"]]}, key=None)[0] == 200
        seconds = time.monotonic() - started
        assert not done, "the large requests finished first: nothing was measured"
        assert seconds < 1.0, f"{seconds:.2f} s behind 24,000 tokens"
        for t in threads:
            t.join(TIMEOUT * 3)
        assert done == [200, 200]
    finally:
        assert server.stop() == 0


def test_streamed_answers_equal_the_library():
    """Answers of several groups (--max-batch-tokens 64) are streamed, and exact."""
    offline = reference_embedders()
    server = start_server("--mix", "top", "--max-batch-tokens", "64")
    sentences = [["The", "bank", "raised", "rates"] * k for k in range(1, 9)]
    try:
        conn = server.connect()
        conn.request("POST", "/embed", json.dumps({"inputs": sentences}),
                     {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.getheader("transfer-encoding") == "chunked"
        answer = json.loads(response.read())
        for tokens, got in zip(sentences, answer["embeddings"], strict=True):
            np.testing.assert_allclose(decode(got), expected(offline, tokens, "top"), atol=1e-5)
        texts = [" ".join(s) for s in sentences]
        status, answer = server.post("/v1/embeddings", {"input": texts}, key=None)
        assert status == 200 and [d["index"] for d in answer["data"]] == list(range(8))
        assert answer["usage"]["prompt_tokens"] == sum(map(len, sentences))
        for tokens, got in zip(sentences, answer["data"], strict=True):
            np.testing.assert_allclose(got["embedding"], expected(offline, tokens, "top", "mean"),
                                       atol=1e-5)
        conn.close()
    finally:
        assert server.stop() == 0
