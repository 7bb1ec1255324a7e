"""`elmo serve` over real HTTP on loopback: vectors, errors, OpenAI shape, metrics, limits."""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
import threading

import numpy as np
import pytest
from elmo_runtime.tokenize import tokenize
from support.serve import (
    API_KEY,
    Server,
    decode,
    expected,
    reference_embedders,
    shared_server,
    start_server,
)


@pytest.fixture(scope="module")
def server():
    yield from shared_server()


@pytest.fixture(scope="session")
def offline():
    return reference_embedders()


TEXT = (
    "The bank raised its interest rates . They sat on the river bank and watched "
    "boats drift by while a dog barked at birds in the old oak tree near home"
)
WORDS = TEXT.split()


def _sentence(rng: random.Random, longest: int = 25) -> list[str]:
    return [rng.choice(WORDS) for _ in range(rng.randint(1, longest))]


def _one_line_error(body: bytes, status: int) -> str:
    text = body.decode()
    assert "\n" not in text.strip() and "Traceback" not in text
    error = json.loads(text)["error"]
    assert error["code"] == status and "\n" not in error["message"]
    return error["message"]


def test_health_and_info(server: Server):
    status, _, body = server.request("GET", "/health", key=None)  # /health needs no key
    assert status == 200 and json.loads(body) == {"status": "ok"}
    status, _, body = server.request("GET", "/info")
    info = json.loads(body)
    assert status == 200
    assert info["model"] == "default.onnx" and info["mix"] == "all"
    assert info["layers"] == 3 and info["dim"] == 256 and info["openai_mix"] == "average"
    assert info["limits"]["max_input_tokens"] == 60 and info["quantization"]["mode"] == "none"


@pytest.mark.parametrize("encoding", ["float", "base64"])
@pytest.mark.parametrize("mix", ["all", "top", "average"])
def test_embed_equals_the_library(server: Server, offline, mix, encoding):
    inputs = [["The", "cat", "sat"], "Don't bank on it, O'Brien.", ["A"]]
    status, body = server.post(
        "/embed", {"inputs": inputs, "mix": mix, "encoding_format": encoding}
    )
    assert status == 200, body
    tokens = [inputs[0], tokenize(inputs[1]), inputs[2]]
    assert len(body["embeddings"]) == 3
    for got, t in zip(body["embeddings"], tokens, strict=True):
        want = expected(offline, t, mix)
        assert decode(got).shape == want.shape
        np.testing.assert_allclose(decode(got), want, atol=1e-5)


def test_embed_mean_pooling_and_default_mix(server: Server, offline):
    status, body = server.post("/embed", {"inputs": [["The", "river", "bank"]], "pooling": "mean"})
    assert status == 200
    got = decode(body["embeddings"][0])
    assert got.shape == (3, 256)  # the server's mix is "all": one mean per layer
    np.testing.assert_allclose(got, expected(offline, ["The", "river", "bank"], "all", "mean"),
                               atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_openai_embeddings_shape(server: Server, offline, encoding):
    texts = ["The bank raised its rates.", "They sat on the river bank."]
    status, body = server.post(
        "/v1/embeddings", {"input": texts, "model": "elmo", "encoding_format": encoding}
    )
    assert status == 200, body
    # what an OpenAI client reads (openai-python decodes base64 as float32 with NumPy)
    assert body["object"] == "list" and body["model"] == "default.onnx"
    assert [d["object"] for d in body["data"]] == ["embedding", "embedding"]
    assert [d["index"] for d in body["data"]] == [0, 1]
    tokens = [tokenize(t) for t in texts]
    n = sum(len(t) for t in tokens)
    assert body["usage"] == {"prompt_tokens": n, "total_tokens": n}
    for d, t in zip(body["data"], tokens, strict=True):
        e = d["embedding"]
        vector = np.frombuffer(base64.b64decode(e), "<f4") if encoding == "base64" else np.array(e)
        assert vector.shape == (256,)
        np.testing.assert_allclose(vector, expected(offline, t, "average", "mean"), atol=1e-5)
    status, body = server.post("/v1/embeddings", {"input": "one string"})
    assert status == 200 and len(body["data"]) == 1


@pytest.mark.parametrize(
    "body, status, words",
    [
        (b'{"inputs": [["a"]', 400, "not valid JSON"),
        (b"[1, 2]", 422, "expected a JSON object"),
        (b"{}", 422, "inputs: required"),
        (b'{"inputs": []}', 422, "inputs: empty list"),
        (b'{"inputs": [["a", 3]]}', 422, "inputs[0][1]"),
        (b'{"inputs": [["a", ""]]}', 422, "inputs[0][1]: expected a non-empty string"),
        (b'{"inputs": [7]}', 422, "inputs[0]"),
        (b'{"inputs": ["a"], "mix": "best"}', 422, "mix: expected one of all, top, average"),
        (b'{"inputs": ["a"], "pooling": "max"}', 422, "pooling"),
        (json.dumps({"inputs": ["a"], "mix": "x" * 5000}).encode(), 422, "found 'xxxxxxx"),
        (b'{"inputs": ["a"], "encoding_format": "hex"}', 422, "encoding_format"),
        (b'{"inputs": ["a"], "input": "b"}', 422, "unknown field 'input'"),
        (b'{"inputs": [[]], "pooling": "mean"}', 422, "inputs[0]: no tokens"),
        (json.dumps({"inputs": [["w"]] * 41}).encode(), 413, "--max-client-batch-size 40"),
        (json.dumps({"inputs": ["x"], "pad": "y" * 100_001}).encode(), 413, "--payload-limit"),
        (json.dumps({"inputs": [["w"], ["w"] * 61]}).encode(), 413, "inputs[1]: 61 tokens"),
    ],
)
def test_embed_errors(server: Server, body, status, words):
    got, _, answer = server.request("POST", "/embed", raw=body)
    assert got == status
    message = _one_line_error(answer, status)
    assert words in message and len(message) < 200


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"input": [1, 2, 3]}, 422, "token ids are not supported"),
        ({"input": ""}, 422, "input[0]: no tokens"),
        ({"input": "a", "dimensions": 64}, 422, "gives 256 dimensions"),
        ({"model": "elmo"}, 422, "input: required"),
        ({"input": ["a"] * 41}, 413, "--max-client-batch-size"),
        ({"input": " ".join(["w"] * 61)}, 413, "input[0]: more than 60 tokens"),  # counted no
        ({"input": "w " * 40_000}, 413, "input[0]: more than 60 tokens"),  # further than 61
    ],
)
def test_openai_errors(server: Server, body, status, words):
    got, _, answer = server.request("POST", "/v1/embeddings", body)
    assert got == status
    assert words in _one_line_error(answer, status)


@pytest.mark.parametrize("key", [None, "wrong", "Basic test-key-123"])
def test_api_key(server: Server, key):
    headers = {"Authorization": key} if key and key.startswith("Basic") else None
    got, _, answer = server.request(
        "POST", "/embed", {"inputs": ["a"]}, key=None if headers else key, headers=headers
    )
    assert got == 401
    assert "API key" in _one_line_error(answer, 401)
    assert server.request("GET", "/metrics", key=key if not headers else None)[0] == 401


def test_unknown_route_and_method(server: Server):
    got, _, answer = server.request("GET", "/nothing")
    assert got == 404 and "/nothing" in _one_line_error(answer, 404)
    got, _, answer = server.request("GET", "/embed")
    assert got == 405 and _one_line_error(answer, 405)


def test_metrics_move(server: Server):
    before = server.metrics()
    ok = ("elmo_requests_total", (("code", "200"), ("endpoint", "/embed")))
    bad = ("elmo_requests_total", (("code", "422"), ("endpoint", "/embed")))
    tokens = ("elmo_tokens_embedded_total", ())
    batches = ("elmo_batch_size_count", ())
    assert server.post("/embed", {"inputs": [["a", "b", "c"], ["d"]]})[0] == 200
    assert server.post("/embed", {"inputs": [[]], "pooling": "mean"})[0] == 422
    after = server.metrics()
    assert after[ok] == before.get(ok, 0) + 1
    assert after[bad] == before.get(bad, 0) + 1
    assert after[tokens] == before[tokens] + 4
    assert after[batches] >= before[batches] + 1
    for name in (
        "elmo_request_duration_seconds_count",
        "elmo_queue_time_seconds_count",
        "elmo_batch_tokens_count",
        "elmo_queue_size",
        "elmo_requests_in_flight",
    ):
        assert any(k[0] == name for k in after), name  # fmt: skip


@pytest.mark.slow
def test_32_concurrent_clients_get_the_library_vectors(server: Server, offline):
    """32 clients x mixed requests at once: every vector equals the library's, alone."""
    errors: list[str] = []
    start = threading.Barrier(32)

    def client(k: int) -> None:
        rng = random.Random(k)
        start.wait()
        for r in range(3):
            mix = rng.choice(["all", "top", "average"])
            pooling = rng.choice(["none", "mean"])
            encoding = rng.choice(["float", "base64"])
            inputs = [
                _sentence(rng) if rng.random() < 0.7 else " ".join(_sentence(rng))
                for _ in range(rng.randint(1, 8))
            ]
            status, body = server.post(
                "/embed",
                {"inputs": inputs, "mix": mix, "pooling": pooling, "encoding_format": encoding},
            )
            if status != 200:
                errors.append(f"client {k} request {r}: {status} {body}")
                continue
            for x, got in zip(inputs, body["embeddings"], strict=True):
                tokens = tokenize(x) if isinstance(x, str) else x
                answers.append((f"client {k} request {r}", tokens, mix, pooling, decode(got)))

    answers: list[tuple] = []
    threads = [threading.Thread(target=client, args=(k,)) for k in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(answers) > 32 * 3
    for where, tokens, mix, pooling, got in answers:  # the library, one sentence at a time
        want = expected(offline, tokens, mix, pooling)
        assert got.shape == want.shape, where
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=f"{where}: {tokens}")


def test_a_failing_model_load_exits_with_one_line(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model")
    for args in (["--model", str(bad)], ["--mix", str(tmp_path / "missing.json")]):
        run = subprocess.run(
            [sys.executable, "-m", "elmo_runtime.cli", "serve", "--port", "0", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 1
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), run.stderr


def test_cors_allows_the_origin_given():
    server = start_server("--cors-allow-origin", "http://app.example")
    try:
        preflight = {
            "Origin": "http://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        }
        status, headers, _ = server.request("OPTIONS", "/embed", key=None, headers=preflight)
        assert status == 200
        assert headers.get("access-control-allow-origin") == "http://app.example"
        other = {**preflight, "Origin": "http://elsewhere.example"}
        assert server.request("OPTIONS", "/embed", key=None, headers=other)[0] == 400
        status, headers, _ = server.request(
            "POST", "/embed", {"inputs": ["a"]}, key=None, headers={"Origin": "http://app.example"}
        )
        assert status == 200
        assert headers.get("access-control-allow-origin") == "http://app.example"
    finally:
        assert server.stop() == 0


def test_binds_loopback_by_default():
    server = start_server()
    try:
        assert "http://127.0.0.1:" in "".join(server.stderr)
        assert server.request("GET", "/health")[0] == 200
    finally:
        assert server.stop() == 0


def test_the_openai_client_reads_it(server: Server, offline):
    openai = pytest.importorskip("openai", reason="the openai package is not installed")
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{server.port}/v1", api_key=API_KEY, max_retries=0
    )
    text = "The bank raised its rates."
    answer = client.embeddings.create(model="elmo", input=[text])  # base64 by default
    assert answer.usage.prompt_tokens == len(tokenize(text))
    want = expected(offline, tokenize(text), "average", "mean")
    np.testing.assert_allclose(np.array(answer.data[0].embedding), want, atol=1e-5)
    with pytest.raises(openai.UnprocessableEntityError, match="no tokens"):
        client.embeddings.create(model="elmo", input=[""])


@pytest.mark.slow  # `elmo --help` imports every command module, the export side's too
def test_help_does_not_load_the_service():
    """`elmo --help` lists `serve` without importing the model or the serve extra."""
    code = (
        "import sys; from click.testing import CliRunner; from elmo_runtime.cli import main; "
        "r = CliRunner().invoke(main, ['--help']); assert 'serve' in r.output, r.output; "
        "print(sorted(m for m in ('uvicorn', 'starlette', 'prometheus_client', 'orjson', "
        "'elmo_runtime.serve.service') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_without_the_extra_it_says_what_to_install(monkeypatch):
    from elmo_runtime.errors import SERVE_HINT, ElmoError
    from elmo_runtime.serve.command import run
    from elmo_runtime.serve.config import ServeConfig

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn now raises ImportError
    with pytest.raises(ElmoError, match="needs uvicorn") as raised:
        run(ServeConfig())
    assert str(raised.value).endswith(SERVE_HINT)
