"""web/elmo.mjs in headless Chromium equals the Python runtime; the demo page works.

Slow: each test starts pages that load onnxruntime-web and a model.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from elmo_runtime import Embedder, webserve
from elmo_runtime.errors import ModelError
from elmo_runtime.format import contract
from elmo_runtime.mix import ScalarMix
from elmo_runtime.tokenize import tokenize
from support.requires import CHROMIUM, need
from support.web import (
    BLANK,
    FP32,
    INT8,
    MISLABELED_VERSION,
    PYTHON_ONLY_VERSIONS,
    VERSIONS_REFUSED,
    WEB,
    WEB_READS,
    Page,
)
from support.web_text import texts

pytestmark = pytest.mark.slow


# Chromium is driven with Playwright for Python over the DevTools protocol, pointed at the
# system's browser (Debian's `chromium`; CHROMIUM overrides): no browser download, and
# Playwright gives console events, evaluation of async code, offline mode and screenshots
# without hand-written protocol plumbing.


@pytest.fixture(scope="session")
def web_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Files the test server serves besides web/: the bundled models and a blank page."""
    if not (WEB / webserve.ORT_DIST).is_dir():
        pytest.skip(f"{WEB / webserve.ORT_DIST} is missing: run `{webserve.NPM_HINT}`")
    folder = tmp_path_factory.mktemp("web")
    blank = folder / "blank.html"
    blank.write_text(BLANK, encoding="utf-8")
    files = {"model.onnx": FP32, "int8.onnx": INT8, "blank.html": blank}
    for version in (*VERSIONS_REFUSED, *PYTHON_ONLY_VERSIONS, MISLABELED_VERSION):  # the int8
        proto = onnx.load(str(INT8))
        meta = {p.key: p.value for p in proto.metadata_props}
        onnx.helper.set_model_props(proto, {**meta, contract.KEY_VERSION: version})
        files[f"v{version}.onnx"] = folder / f"v{version}.onnx"
        onnx.save(proto, str(files[f"v{version}.onnx"]))
    return files


@pytest.fixture(scope="session")
def base_url(web_files: dict[str, Path]) -> Iterator[str]:
    with webserve.serving(WEB, web_files) as url:
        yield url


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    need("playwright", "chromium")
    from playwright import sync_api
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def blank_page(browser: object, base_url: str) -> Iterator[Page]:
    page = Page(browser, base_url)
    yield page
    page.close()

ATOL = 1e-4
# Where the demo test saves its screenshot: a temp file, or this variable's path. The README's
# image is refreshed on purpose (see bench/README.md): ELMO_WEB_SCREENSHOT=docs/web-demo.png
SCREENSHOT_ENV = "ELMO_WEB_SCREENSHOT"

SENTENCES = [
    tokenize("The cat sat on the mat."),
    tokenize("Ünïcödé wörds: naïve café, Straße and Ærøskøbing!"),
    tokenize("I love it 🙂 👍🏽 🇫🇷 — really."),
    [],
    [f"w{i % 37}" if i % 5 else "the" for i in range(150)],
    ["a" * 60, "é" * 30, "🙂" * 13, "東" * 17, "a" * 47 + "é", "short"],
    ["<S>", "hello", "</S>", "world"],
    tokenize("東京は日本の首都です。"),
    tokenize("مرحبا بالعالم"),
    tokenize("Don't stop, she's O'Brien's friend."),
    tokenize("Pi is 3.14, a crowd of 1,000 at 9:30 in the 1990s."),
    ["word"],
    tokenize("bank bank river bank money bank"),
    ["e\u0301cole", "cafe\u0301"],
    tokenize("Καλημέρα κόσμε"),
    tokenize("Привет, мир!"),
    tokenize("नमस्ते दुनिया"),
    tokenize("... -- (( )) __ ¿¡"),
    tokenize("ELMo ELMO elmo Elmo"),
    tokenize("Another ordinary sentence about the weather today."),
]
MIXES = {
    "all": "all",
    "top": "top",
    "average": "average",
    "weights": {"weights": [0.5, -0.25, 1.0], "gamma": 0.75},
    "layer_norm": {"weights": [0.1, 0.2, -0.3], "gamma": 1.5, "do_layer_norm": True},
}

EMBED_JS = """async ({model, sentences, mixes}) => {
  const m = await import('./elmo.mjs');
  const emb = await m.Embedder.create(model, {threads: 1});
  const b64 = (a) => {
    const bytes = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    let s = '';
    for (let i = 0; i < bytes.length; i += 0x8000) {
      s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    }
    return btoa(s);
  };
  const out = {};
  for (const [name, mix] of Object.entries(mixes)) {
    const vectors = await emb.embedBatch(sentences, {mix});
    out[name] = vectors.map((v) => ({dims: v.dims, data: b64(v.data)}));
  }
  return out;
}"""


def _python_mix(name: str) -> object:
    mix = MIXES[name]
    return ScalarMix(**mix) if isinstance(mix, dict) else mix


@pytest.mark.parametrize("model", [FP32, INT8], ids=["fp32", "int8"])
def test_browser_equals_python_for_every_mix(blank_page: Page, model: Path) -> None:
    n_layers = len(MIXES["weights"]["weights"])
    got = blank_page.page.evaluate(
        EMBED_JS,
        {"model": "model.onnx" if model == FP32 else "int8.onnx", "sentences": SENTENCES,
         "mixes": MIXES},
    )
    worst = {}
    for name in MIXES:
        expected = Embedder(model, mix=_python_mix(name)).embed_batch(SENTENCES)
        assert expected[0].shape[0] == (n_layers if name == "all" else len(SENTENCES[0]))
        for i, (js, py) in enumerate(zip(got[name], expected, strict=True)):
            assert js["dims"] == list(py.shape), (name, i)
            data = np.frombuffer(base64.b64decode(js["data"]), dtype=np.float32).reshape(py.shape)
            diff = float(np.abs(data - py).max()) if py.size else 0.0
            worst[name] = max(worst.get(name, 0.0), diff)
    assert all(d <= ATOL for d in worst.values()), f"{model.name}: max |JS - Python| {worst}"
    assert not blank_page.errors


def test_unknown_format_version_is_refused_by_name(
    blank_page: Page, web_files: dict[str, Path]
) -> None:
    """A version neither runtime reads: refused before onnxruntime loads, naming the version,
    with the Python runtime's advice; a version only Python reads is refused by name too, and
    a byte model labelled version 3 (code-point vocabulary) with Python's message."""
    python_advice = {}
    for version in (*VERSIONS_REFUSED, MISLABELED_VERSION):
        proto = onnx.load(str(web_files[f"v{version}.onnx"]), load_external_data=False)
        with pytest.raises(ModelError) as python:
            contract.parse_metadata({p.key: p.value for p in proto.metadata_props}, "m")
        python_advice[version] = str(python.value)
    names = [f"v{v}.onnx" for v in (*VERSIONS_REFUSED, *PYTHON_ONLY_VERSIONS,
                                     MISLABELED_VERSION)]
    got = blank_page.page.evaluate(
        """async (names) => {
          const m = await import('./elmo.mjs');
          const out = {};
          for (const name of names) {
            try { await m.Embedder.create(name); out[name] = 'loaded'; }
            catch (e) { out[name] = e.message; }
          }
          return out;
        }""",
        names,
    )
    reads = " and ".join(map(str, WEB_READS))
    for version in VERSIONS_REFUSED:
        advice = python_advice[version].rsplit("; ", 1)[1]
        assert got[f"v{version}.onnx"] == (
            f"v{version}.onnx: elmo-edge model format version '{version}' is not supported "
            f"(elmo.mjs reads versions {reads}); {advice}")
    mislabeled = f"v{MISLABELED_VERSION}.onnx"
    assert got[mislabeled] == mislabeled + python_advice[MISLABELED_VERSION].removeprefix("m")
    for version in PYTHON_ONLY_VERSIONS:
        assert got[f"v{version}.onnx"].startswith(
            f"v{version}.onnx: elmo-edge model format version '{version}' is read by the Python "
            "runtime but not by elmo.mjs")


def test_tokenizer_and_char_ids_in_chromium_equal_python(blank_page: Page) -> None:
    """The same comparison as test_text.py, on Chromium's own regex engine and Unicode data."""
    raw = texts(2000, seed=16)
    got = blank_page.page.evaluate(
        """async (texts) => {
          const m = await import('./elmo.mjs');
          const tokens = texts.map(m.tokenize);
          const packed = m.pack(tokens, 50);
          return {tokens, chars: Array.from(packed.tokenChars),
                  index: Array.from(packed.tokenIndex)};
        }""",
        raw,
    )
    expected = [tokenize(t) for t in raw]
    bad = [(t, g, e) for t, g, e in zip(raw, got["tokens"], expected, strict=True) if g != e]
    assert not bad, f"{len(bad)} of {len(raw)} differ, first: {bad[0]!r}"
    from elmo_runtime.format import chars

    packed = chars.pack(expected, 50)
    assert got["chars"] == packed.token_chars.ravel().tolist()
    assert got["index"] == packed.token_index.ravel().tolist()


def test_demo_page_loads_without_errors_and_works_offline(browser: object, base_url: str,
                                                          tmp_path: Path) -> None:
    screenshot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "web-demo.png")
    demo = Page(browser, base_url, "index.html", viewport={"width": 1200, "height": 900})
    page = demo.page
    try:
        page.wait_for_function("window.elmoDemo.offline === true", timeout=120_000)
        page.wait_for_selector("body[data-state=ready]", timeout=120_000)
        assert page.evaluate("crossOriginIsolated") is True
        status = page.inner_text("#status")
        assert "Model loaded in" in status and "ms per sentence" in status
        assert page.locator("#sentences li").count() == 4
        assert page.locator("#chart polyline").count() == 6  # 4 occurrences of "fire"
        assert page.inner_text("#word") == "fire"
        page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        # Offline from here on: the model is in the page, new text still gets vectors.
        demo.context.set_offline(True)
        page.evaluate("document.body.dataset.state = 'busy'")
        page.fill("#text", "Rivers flood.\nThe flood came at night.\nA flood of letters arrived.")
        page.wait_for_selector("body[data-state=ready]", timeout=60_000)
        assert page.inner_text("#word") == "flood"
        assert page.locator("#chart polyline").count() == 3
        page.click("#sentences li:nth-child(2) .tok:nth-child(1)")  # pick "The": one occurrence
        assert page.inner_text("#word") == "The"
        assert "occurs once" in page.text_content("#chart")
        # A reload without network: the service worker serves the page, ort and the model.
        page.wait_for_function("window.elmoDemo.offline === true", timeout=60_000)
        page.reload()
        page.wait_for_selector("body[data-state=ready]", timeout=120_000)
        assert "Model loaded in" in page.inner_text("#status")
        assert page.inner_text("#word") == "fire"
        assert not demo.errors, json.dumps(demo.errors)
    finally:
        demo.close()


# ELMoForManyLangs conversions (format version 3: a learned code-point vocabulary, word ids):
# random models written with torch and converted with `elmo convert`, served on their own.
EFML_WORDS = ["Haus", "the", "cat", "groß"]
# known and unseen words, case variants, characters outside char.dic (Ω, 🙂) and inside (😀,
# 中文), tokens longer than max_chars (12), the literal boundary tokens
EFML_SENTENCES = [
    ["Haus", "the", "cat", "."],
    ["Ωmega", "naïve", "中文", "😀", "🙂", "Unseen", "HAUS", "The"],
    tokenize("Das Haus ist groß, the cat sat on the mat."),
    ["x"],
    ["Donaudampfschifffahrt", "😀" * 14, "e\u0301" * 8, "<bos>", "the", "<eos>"],
    [],
    tokenize("I love it 👍🏽 — really, the cat too."),
]
EFML_MIXES = {"all": "all", "top": "top", "average": "average"}


def _convert(folder: Path, name: str, **config: object) -> Path:
    from click.testing import CliRunner
    from elmo_runtime.cli import main
    from support import efml_random

    directory = efml_random.write_random_model(
        folder / name, efml_random.small_config(**config), words=EFML_WORDS, seed=7, scale=1.5)
    out = folder / f"{name}.onnx"
    result = CliRunner().invoke(main, ["convert", str(directory), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def efml_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A random EFML model with a word table and one without, converted, and a blank page."""
    if not (WEB / webserve.ORT_DIST).is_dir():
        pytest.skip(f"{WEB / webserve.ORT_DIST} is missing: run `{webserve.NPM_HINT}`")
    pytest.importorskip("torch", reason="writing an ELMoForManyLangs model (torch.save) needs "
                        "torch")
    folder = tmp_path_factory.mktemp("efml_web")
    blank = folder / "blank.html"
    blank.write_text(BLANK, encoding="utf-8")
    return {"words.onnx": _convert(folder, "words"),
            "chars.onnx": _convert(folder, "chars", word_dim=0),
            "blank.html": blank}


@pytest.fixture(scope="module")
def efml_page(browser: object, efml_files: dict[str, Path]) -> Iterator[Page]:
    with webserve.serving(WEB, efml_files) as url:
        page = Page(browser, url)
        yield page
        page.close()


@pytest.mark.parametrize("name", ["words.onnx", "chars.onnx"])
def test_browser_equals_python_on_efml_models(efml_page: Page, efml_files: dict[str, Path],
                                              name: str) -> None:
    model = efml_files[name]
    python = Embedder(model)
    assert python.info.char_scheme == "codepoint-vocab"
    assert python.info.vocabulary.has_words == (name == "words.onnx")
    got = efml_page.page.evaluate(EMBED_JS, {"model": name, "sentences": EFML_SENTENCES,
                                             "mixes": EFML_MIXES})
    worst = {}
    for mix in EFML_MIXES:
        expected = Embedder(model, mix=mix).embed_batch(EFML_SENTENCES)
        for i, (js, py) in enumerate(zip(got[mix], expected, strict=True)):
            assert js["dims"] == list(py.shape), (mix, i)
            data = np.frombuffer(base64.b64decode(js["data"]), dtype=np.float32).reshape(py.shape)
            worst[mix] = max(worst.get(mix, 0.0), float(np.abs(data - py).max()) if py.size else 0)
    assert all(d <= ATOL for d in worst.values()), f"{name}: max |JS - Python| {worst}"
    assert not efml_page.errors


def test_efml_model_info_in_the_browser(efml_page: Page) -> None:
    info = efml_page.page.evaluate(
        """async () => {
          const m = await import('./elmo.mjs');
          const emb = await m.Embedder.create('words.onnx', {threads: 1});
          const i = emb.info;
          return {scheme: i.charScheme, words: i.hasWords, maxChars: i.maxChars};
        }""")
    assert info == {"scheme": "codepoint-vocab", "words": True, "maxChars": 12}
