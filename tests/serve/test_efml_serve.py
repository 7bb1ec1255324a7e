"""An ELMoForManyLangs model through `elmo serve`: /embed and /v1/embeddings give the
offline Embedder's vectors (code-point char ids and word ids on the server's side too)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="writing an ELMoForManyLangs model (torch.save) needs torch")
from click.testing import CliRunner  # noqa: E402
from elmo_runtime import Embedder  # noqa: E402
from elmo_runtime.cli import main  # noqa: E402
from elmo_runtime.tokenize import tokenize  # noqa: E402
from support import efml_random  # noqa: E402
from support.serve import Server, decode, start_server  # noqa: E402

ATOL = 1e-5
# known words, unseen ones, characters outside char.dic, one beyond the BMP, one token alone
SENTENCES = [["Haus", "the", "cat", "."], ["Ωmega", "naïve", "中文", "😀", "Unseen"], ["x"]]
TEXT = "Das Haus ist groß, the cat sat."


@pytest.fixture(scope="module")
def efml_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random EFML model (word embeddings on) converted with `elmo convert`."""
    tmp = tmp_path_factory.mktemp("efml")
    directory = efml_random.write_random_model(tmp / "model", words=["Haus", "the", "cat"],
                                               seed=7, scale=1.5)
    out = tmp / "efml.onnx"
    result = CliRunner().invoke(main, ["convert", str(directory), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def server(efml_model: Path):
    s = start_server("--model", str(efml_model))
    yield s
    assert s.stop() == 0, "".join(s.stderr)


def _post(server: Server, path: str, body: dict) -> dict:
    status, _, data = server.request("POST", path, body, key=None)
    assert status == 200, data
    return json.loads(data)


@pytest.mark.slow
@pytest.mark.parametrize("mix", ["all", "top", "average"])
def test_embed_equals_the_offline_embedder(server: Server, efml_model: Path, mix: str) -> None:
    offline = Embedder(efml_model, mix=mix)
    assert offline.info.char_scheme == "codepoint-vocab"  # an EFML model indeed
    inputs = [*SENTENCES, TEXT]
    tokens = [*SENTENCES, tokenize(TEXT)]
    for encoding in ("float", "base64"):
        got = _post(server, "/embed", {"inputs": inputs, "mix": mix,
                                       "encoding_format": encoding})["embeddings"]
        for sentence, item in zip(tokens, got, strict=True):
            want = offline.embed_sentence(sentence)
            assert decode(item).shape == want.shape
            np.testing.assert_allclose(decode(item), want, rtol=0, atol=ATOL)
    pooled = _post(server, "/embed", {"inputs": SENTENCES, "mix": mix, "pooling": "mean"})
    for sentence, item in zip(SENTENCES, pooled["embeddings"], strict=True):
        want = offline.embed_sentence(sentence).mean(axis=-2)
        np.testing.assert_allclose(decode(item), want, rtol=0, atol=ATOL)


@pytest.mark.slow
def test_openai_endpoint_and_info(server: Server, efml_model: Path) -> None:
    offline = Embedder(efml_model, mix="average")  # /v1/embeddings' mix when the server's is all
    texts = [TEXT, *(" ".join(sentence) for sentence in SENTENCES)]  # OpenAI's input: strings
    got = _post(server, "/v1/embeddings", {"input": texts})["data"]
    for text, item in zip(texts, got, strict=True):
        want = offline.embed_sentence(tokenize(text)).mean(axis=-2)
        np.testing.assert_allclose(decode(item["embedding"]), want, rtol=0, atol=ATOL)
    status, _, data = server.request("GET", "/info", key=None)
    assert status == 200 and efml_model.name in data.decode()
