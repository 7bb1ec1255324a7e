"""Helpers for `elmo serve` tests: a real server process, real HTTP (stdlib http.client)."""

from __future__ import annotations

import base64
import functools
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from support.processes import default_signals
from support.requires import need

need("starlette", "uvicorn", "prometheus_client", "orjson")  # the serve extra

from elmo_runtime import Embedder  # noqa: E402

READY = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
START_TIMEOUT = 120.0
API_KEY = "test-key-123"


@dataclass
class Server:
    """A running `elmo serve` process and what it printed on stderr."""

    proc: subprocess.Popen
    port: int
    stderr: list[str] = field(default_factory=list)

    def connect(self, timeout: float = 60.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        key: str | None = API_KEY,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection: (status, headers, body)."""
        conn = self.connect()
        try:
            hdrs = {"Content-Type": "application/json", **(headers or {})}
            if key is not None:
                hdrs["Authorization"] = f"Bearer {key}"
            data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            conn.request(method, path, body=data, headers=hdrs)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def post(self, path: str, body: Any, **kw: Any) -> tuple[int, Any]:
        status, _, data = self.request("POST", path, body, **kw)
        return status, json.loads(data)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of GET /metrics: (name, sorted labels) -> value."""
        from prometheus_client.parser import text_string_to_metric_families

        status, _, data = self.request("GET", "/metrics")
        assert status == 200, data
        samples = {}
        for family in text_string_to_metric_families(data.decode()):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return samples

    def stop(self) -> int:
        """SIGTERM (a drain), then SIGKILL after 60 s; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int:
        """SIGKILL if it still runs (a test's last word: nothing is left behind); exit status."""
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait()


def start_server(*args: str, file_limit: int | None = None) -> Server:
    """`python -m elmo_runtime.cli serve --port 0 ARGS`, once it says where it listens;
    ``file_limit``: the server's RLIMIT_NOFILE (soft and hard), set in the child.

    The child starts with default SIGINT/SIGTERM dispositions, whatever this process
    inherited. Callers stop it (:meth:`Server.stop`, :meth:`Server.kill`) in a finally or a
    fixture's teardown (tests/serve/conftest.py: ``serve``)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def before_exec() -> None:
        default_signals()
        if file_limit is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (file_limit, file_limit))

    proc = subprocess.Popen(
        [sys.executable, "-m", "elmo_runtime.cli", "serve", "--port", "0", "--threads", "1", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=before_exec,
    )
    lines: list[str] = []
    deadline = time.monotonic() + START_TIMEOUT
    port = None
    assert proc.stderr is not None
    while port is None:
        line = proc.stderr.readline()
        if not line:
            proc.wait(timeout=10)
            raise AssertionError(f"elmo serve exited {proc.returncode}: {''.join(lines)}")
        lines.append(line)
        match = READY.search(line)
        if match:
            port = int(match.group(1))
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"elmo serve did not start: {''.join(lines)}")
    server = Server(proc, port, lines)
    threading.Thread(target=_drain, args=(proc, lines), daemon=True).start()
    return server


def _drain(proc: subprocess.Popen, lines: list[str]) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)


def decode(item: Any) -> np.ndarray:
    """An /embed embedding as an array: nested float lists or {"shape", "data"} base64."""
    if isinstance(item, dict):
        data = np.frombuffer(base64.b64decode(item["data"]), dtype="<f4")
        return data.reshape(item["shape"])
    return np.asarray(item, dtype=np.float32)


def expected(
    offline: dict[str, Embedder], tokens: list[str], mix: str, pooling: str = "none"
) -> np.ndarray:
    """What the library gives for one sentence alone (mean over its tokens if pooled)."""
    v = offline[mix].embed_sentence(tokens)
    return v.mean(axis=-2) if pooling == "mean" else v


def shared_server() -> Iterator[Server]:
    """The bundled model with small limits and an API key (mix: all), stopped cleanly."""
    s = start_server(
        "--api-key", API_KEY,
        "--max-client-batch-size", "40",
        "--max-input-tokens", "60",
        "--payload-limit", "100000",
    )  # fmt: skip
    yield s
    assert s.stop() == 0, "".join(s.stderr)


@functools.cache
def reference_embedders() -> dict[str, Embedder]:
    """The library on the same (bundled) model, one Embedder per mix: the reference vectors."""
    return {mix: Embedder(mix=mix) for mix in ("all", "top", "average")}
