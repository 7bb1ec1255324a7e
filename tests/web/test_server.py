"""`elmo web`'s server and the generated web/contract.json (no browser needed)."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

import pytest
from elmo_runtime import webserve
from elmo_runtime.errors import ElmoError
from elmo_runtime.spec import contract
from webutil import FP32, WEB, node_or_skip


def test_contract_json_is_generated_from_the_contract() -> None:
    text = (WEB / "contract.json").read_text(encoding="utf-8")
    assert text == webserve.contract_text(), "regenerate it: python -m elmo_runtime.webserve"
    assert webserve.contract_json()["format_version"] == contract.FORMAT_VERSION


def _get(url: str) -> tuple[int, Message, bytes]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.headers, response.read()


def test_server_sends_isolation_headers_and_the_model(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<p>hi</p>", encoding="utf-8")
    (tmp_path / "a.mjs").write_text("export {};", encoding="utf-8")
    with webserve.serving(tmp_path, {"model.onnx": FP32}) as url:
        assert url.startswith("http://127.0.0.1:")
        status, headers, body = _get(url + "model.onnx?v=1")
        assert status == 200 and body == FP32.read_bytes()
        assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
        assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        _, headers, _ = _get(url + "a.mjs")
        assert headers["Content-Type"].startswith("text/javascript")
        assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        with pytest.raises(urllib.error.HTTPError, match="404"):
            _get(url + "missing.js")


def test_web_dir_checks_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ElmoError, match="no web/index.html"):
        webserve.check_web_dir(tmp_path)
    (tmp_path / "index.html").write_text("", encoding="utf-8")
    (tmp_path / "elmo.mjs").write_text("", encoding="utf-8")
    with pytest.raises(ElmoError, match="npm ci --prefix web"):
        webserve.check_web_dir(tmp_path)


def test_busy_port_is_an_elmo_error(tmp_path: Path) -> None:
    with webserve.serving(tmp_path, {}) as url:
        port = int(url.rsplit(":", 1)[1].strip("/"))
        with pytest.raises(ElmoError, match=f"cannot listen on 127.0.0.1:{port}"):
            webserve.make_server(tmp_path, {}, port)


def test_javascript_unit_tests_pass() -> None:
    """web/test/*.test.mjs (pure functions: char ids, metadata checks, mixes) under node --test."""
    done = subprocess.run([node_or_skip(), "--test", "test/"], cwd=WEB, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "# fail 0" in done.stdout and "# pass 0" not in done.stdout


def test_elmo_web_serves_until_stopped(tmp_path: Path) -> None:
    if not (WEB / webserve.ORT_DIST).is_dir():
        pytest.skip(f"{WEB / webserve.ORT_DIST} is missing: run `{webserve.NPM_HINT}`")
    proc = subprocess.Popen([sys.executable, "-m", "elmo_runtime.cli", "web", "--port", "0"],
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        url = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
        assert url, line
        status, headers, body = _get(url.group(1))
        assert status == 200 and b"demo.mjs" in body
        assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        assert _get(url.group(1) + "model.onnx")[2] == FP32.read_bytes()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_elmo_web_errors_are_one_line(tmp_path: Path) -> None:
    for args, message in ((["--model", str(tmp_path / "no.onnx")], "no such model file"),
                          (["--web-dir", str(tmp_path)], "no web/index.html")):
        done = subprocess.run([sys.executable, "-m", "elmo_runtime.cli", "web", *args],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1
        assert done.stderr.startswith("Error: ") and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
