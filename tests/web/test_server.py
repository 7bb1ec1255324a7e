"""`elmo web`'s server and the generated web/contract.json (no browser needed)."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

import numpy as np
import pytest
from elmo_runtime import corpus, webserve
from elmo_runtime.errors import ElmoError
from elmo_runtime.format import contract
from elmo_runtime.format import web as web_facts
from support.web import FP32, WEB, node_or_skip


def test_contract_json_is_generated_from_the_contract() -> None:
    text = (WEB / "contract.json").read_text(encoding="utf-8")
    assert text == web_facts.contract_text(), "regenerate it: python -m elmo_runtime.webserve"
    facts = web_facts.contract_json()
    assert facts["format_version"] == contract.FORMAT_VERSION
    assert facts["bounds"] == {"max_sentence_tokens": corpus.MAX_TOKENS,
                               "max_gamma": float(np.finfo(np.float32).max)}
    assert facts["text"] == {"normal_form": "NFC"}


def test_service_worker_lists_every_file_the_page_imports() -> None:
    text = (WEB / "sw.js").read_text(encoding="utf-8")
    assert text == webserve.service_worker_text(WEB), "regenerate: python -m elmo_runtime.webserve"
    files = webserve.page_files(WEB)
    # every module of web/src and the generated contract: a new module is listed without a word
    assert {f"src/{p.name}" for p in (WEB / "src").glob("*.mjs")} <= set(files)
    assert {"index.html", "demo.mjs", "demo.css", "elmo.mjs", "contract.json"} <= set(files)
    assert all((WEB / f).is_file() for f in files if not f.startswith("node_modules/"))


def test_elmo_web_serves_the_generated_files() -> None:
    with webserve.serving(WEB, {"model.onnx": FP32}) as url:
        for name in ("contract.json", "sw.js", "src/mix.mjs"):
            status, headers, body = _get(url + name)
            assert status == 200 and body == (WEB / name).read_bytes()
        assert headers["Content-Type"] == "text/javascript"
        assert json.loads(_get(url + "contract.json")[2]) == web_facts.contract_json()


def test_page_files_follow_imports_and_refuse_missing_ones(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text(
        '<link rel="icon" href="data:,"><script type="module" src="a.mjs?v=2"></script>\n'
        '<!-- <script src="gone.mjs"></script> -->', encoding="utf-8")
    (tmp_path / "lib").mkdir()
    (tmp_path / "a.mjs").write_text(
        "// import x from './commented.mjs';\nimport {\n  b,\n} from './lib/b.mjs';\n"
        "export { c } from \"./lib/c.mjs\";\nimport data from './d.json' with { type: 'json' };\n"
        "const u = 'https://example.org/x.mjs';\n", encoding="utf-8")
    (tmp_path / "lib" / "b.mjs").write_text("import '../a.mjs';\nexport const b = 1;\n",
                                            encoding="utf-8")
    (tmp_path / "lib" / "c.mjs").write_text("export const c = 1;\n", encoding="utf-8")
    (tmp_path / "d.json").write_text("{}", encoding="utf-8")
    names = ["a.mjs", "d.json", "index.html", "lib/b.mjs", "lib/c.mjs"]
    assert webserve.page_files(tmp_path)[: len(names)] == names
    (tmp_path / "lib" / "c.mjs").unlink()
    with pytest.raises(ElmoError, match=r"c\.mjs: the page needs it but there is no such file"):
        webserve.page_files(tmp_path)
    (tmp_path / "lib" / "c.mjs").write_text("export const c = 1;\n", encoding="utf-8")
    (tmp_path / "lib" / "b.mjs").write_text("import '../../outside.mjs';\n", encoding="utf-8")
    with pytest.raises(ElmoError, match="outside"):
        webserve.page_files(tmp_path)


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


def _request(url: str, method: str = "GET", path: str = "/",
             host: str | None = None) -> tuple[int, Message, bytes]:
    """One request to the server at ``url`` with any method and ``Host`` header (None: the
    usual one)."""
    port = int(url.rsplit(":", 1)[1].strip("/"))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=host is not None)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def test_a_foreign_host_header_is_refused(tmp_path: Path) -> None:
    """DNS rebinding: a page whose name now resolves to 127.0.0.1 sends its own name."""
    (tmp_path / "index.html").write_text("<p>hi</p>", encoding="utf-8")
    with webserve.serving(tmp_path, {"model.onnx": FP32}) as url:
        port = url.rsplit(":", 1)[1].strip("/")
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.2", f"[::2]:{port}"):
            status, headers, body = _request(url, path="/model.onnx", host=host)
            assert status == 421, host
            text = body.decode()
            assert text.count("\n") == 1 and "is not a name of this server" in text, text
            assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        for host in (f"127.0.0.1:{port}", f"LOCALHOST:{port}", "localhost", f"[::1]:{port}"):
            status, _, body = _request(url, host=host)
            assert (status, body) == (200, b"<p>hi</p>"), host
        assert webserve.HOST_NAMES == ("127.0.0.1", "localhost", "::1")  # each name once


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"])
def test_only_get_and_head_are_answered(tmp_path: Path, method: str) -> None:
    (tmp_path / "index.html").write_text("<p>hi</p>", encoding="utf-8")
    with webserve.serving(tmp_path, {}) as url:
        status, headers, body = _request(url, method)
        assert status == 405
        assert headers["Allow"] == "GET, HEAD"
        assert body.decode() == f"{method} is not served here (allowed: GET, HEAD)\n"
        status, headers, body = _request(url, "HEAD")
        assert (status, body) == (200, b"")
        assert headers["Content-Length"] == str(len("<p>hi</p>"))


def test_no_listing_and_no_path_of_this_machine(tmp_path: Path) -> None:
    web = tmp_path / "web"
    (web / "sub").mkdir(parents=True)
    (web / "index.html").write_text("<p>hi</p>", encoding="utf-8")
    (web / "sub" / "secret.txt").write_text("s", encoding="utf-8")
    gone = tmp_path / "gone.onnx"
    with webserve.serving(web, {"model.onnx": gone}) as url:
        for path, expected in (("/sub/", 404), ("/sub", 301), ("/model.onnx", 404),
                               ("/missing.js", 404), ("/../gone.onnx", 400)):
            status, headers, body = _request(url, path=path)
            assert status == expected, path
            assert b"secret.txt" not in body
            for leak in (str(tmp_path), str(web)):
                assert leak not in body.decode(errors="replace"), (path, body)
                assert leak not in str(headers), (path, headers)
        assert _request(url, path="/sub/secret.txt")[2] == b"s"


def _raw(url: str, target: bytes) -> bytes:
    """What the server answers to ``GET target`` sent as raw bytes (no client-side checks)."""
    port = int(url.rsplit(":", 1)[1].strip("/"))
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_only_regular_files_inside_the_folder_and_malformed_paths_refused(tmp_path, capfd):
    web = tmp_path / "web"
    (web / "sub").mkdir(parents=True)
    (web / "index.html").write_text("<p>hi</p>", encoding="utf-8")
    (web / "index.html.txt").write_text("not this", encoding="utf-8")
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET", encoding="utf-8")
    (web / "out.txt").symlink_to(secret)  # a link out of the folder (was served)
    (web / "sub" / "out").symlink_to(tmp_path)  # a folder link out of it
    (web / "in.html").symlink_to(web / "index.html")  # a link that stays inside: served
    os.mkfifo(web / "pipe")  # not a regular file
    model = tmp_path / "models" / "m.onnx"
    model.parent.mkdir()
    model.write_bytes(b"onnx")
    with webserve.serving(web, {"model.onnx": model}, quiet=False) as url:
        capfd.readouterr()
        cases = [
            (b"/out.txt", 404), (b"/sub/out/secret.txt", 404), (b"/pipe", 404),
            (b"/index.html%00.txt", 400), (b"/index.html\x00.txt", 400),
            (b"/%2e%2e/secret.txt", 400), (b"/..%2fsecret.txt", 400), (b"/sub/%2E/x", 400),
            (b"/%2e%2e%5csecret.txt", 400), (b"/a%0d%0aSet-Cookie:x", 400),
            (b"/%ff%fe", 400), (b"//etc/passwd", 404), (b"/" + b"a" * 2000, 414),
        ]
        for target, status in cases:
            answer = _raw(url, target)
            assert answer.startswith(f"HTTP/1.0 {status} ".encode()), (target, answer[:80])
            assert b"SECRET" not in answer and str(tmp_path).encode() not in answer
            assert answer.split(b"\r\n\r\n", 1)[1].count(b"\n") == 1, answer  # one line
        assert _raw(url, b"/in.html").endswith(b"<p>hi</p>")
        assert _raw(url, b"/model.onnx?v=2").endswith(b"onnx")  # the model given: served
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == len(cases) + 2, err  # one line a request


def test_a_folder_swapped_for_a_link_after_the_check_is_not_followed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder on the way replaced by a link out between the path check and the open
    (someone who may write the folder, racing it) was followed: only the last component
    was opened without following links. Here the swap happens right after the check."""
    web = tmp_path / "web"
    (web / "sub").mkdir(parents=True)
    (web / "sub" / "a.txt").write_text("mine", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_text("SECRET", encoding="utf-8")
    checked = webserve._inside

    def check_then_swap(root: str, path: str) -> str | None:
        real = checked(root, path)
        if real is not None and real.endswith("a.txt") and not (web / "sub").is_symlink():
            (web / "sub").rename(tmp_path / "moved")
            (web / "sub").symlink_to(out, target_is_directory=True)
        return real

    monkeypatch.setattr(webserve, "_inside", check_then_swap)
    with webserve.serving(web, {}) as url:
        answer = _raw(url, b"/sub/a.txt")
    assert answer.startswith(b"HTTP/1.0 404 "), answer[:80]
    assert b"SECRET" not in answer


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


def test_a_wheel_install_finds_web_in_the_current_checkout(tmp_path, monkeypatch):
    """Installed without web/ (a wheel), `elmo web` run in a checkout serves ./web."""
    from elmo_runtime import webserve

    fake_pkg = tmp_path / "site" / "elmo_runtime" / "webserve.py"
    monkeypatch.setattr(webserve, "__file__", str(fake_pkg))
    checkout = tmp_path / "checkout"
    (checkout / "web").mkdir(parents=True)
    (checkout / "web" / "index.html").write_text("<!doctype html>", encoding="utf-8")
    monkeypatch.chdir(checkout)
    assert webserve.default_web_dir() == checkout / "web"
    monkeypatch.chdir(tmp_path)
    assert webserve.default_web_dir() == tmp_path / "web"  # nothing here: the message names it
