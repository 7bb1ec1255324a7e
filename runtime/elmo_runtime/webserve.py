"""`elmo web`: the browser demo (web/) and a model, served on 127.0.0.1.

The page runs the model itself with onnxruntime-web (WASM); this server only
hands out files. It sends the cross-origin isolation headers
(``Cross-Origin-Opener-Policy: same-origin``,
``Cross-Origin-Embedder-Policy: require-corp``) without which browsers refuse
WASM threads, and serves the chosen model at ``/model.onnx`` next to the page.

Like `elmo serve` on loopback it answers only requests whose ``Host`` header is
a loopback name (421 otherwise: a DNS-rebinding page cannot read it), only
``GET`` and ``HEAD`` (405 otherwise), and lists no directories (404): its answers
name no file path of this machine. It serves only regular files whose real path
(links resolved) is inside its folder, and the model it was given: a link out of
the folder is 404; a malformed path (NUL or another control character, a
backslash, ``.``/``..`` segments, encoded or not, bytes that are not UTF-8, over
:data:`MAX_PATH` bytes) is 400 or 414. Every refusal is one line of text and one
log line, never a traceback; a client silent for :data:`CLIENT_TIMEOUT` seconds is
dropped.

``web/contract.json`` is what ``web/elmo.mjs`` knows of the model contract
(format name and version, metadata keys, char-id scheme, tensor names). It is
generated from :mod:`elmo_runtime.format.contract` by :func:`contract_json`
(``python -m elmo_runtime.webserve`` rewrites it); a test checks the file
against this function so the two sides cannot drift apart.
"""

from __future__ import annotations

import functools
import json
import os
import stat
import sys
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import click

from .errors import ElmoError, ModelError
from .format import chars, codepoints, contract
from .serve.config import host_allowed, loopback_names

HOST = "127.0.0.1"
HOST_NAMES = loopback_names(HOST) or ()  # the Host header values answered (DNS rebinding)
METHODS = ("GET", "HEAD")
MAX_PATH = 1024  # bytes of a request path (its query and fragment excluded)
CLIENT_TIMEOUT = 30.0  # seconds a connection may stay silent
DEFAULT_PORT = 8765
MODEL_ROUTE = "model.onnx"
ORT_DIST = Path("node_modules") / "onnxruntime-web" / "dist"
NPM_HINT = "npm ci --prefix web"
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def contract_json() -> dict[str, Any]:
    """The contract facts ``web/elmo.mjs`` reads, as a JSON-ready dict."""
    return {
        "generated_by": "python -m elmo_runtime.webserve (from elmo_runtime.format.contract)",
        "format": contract.FORMAT_NAME,
        "format_version": contract.FORMAT_VERSION,  # the one elmo.mjs reads: bilm-tf byte ids
        "python_reads": list(contract.READABLE_VERSIONS),
        "keys": {
            "format": contract.KEY_FORMAT,
            "format_version": contract.KEY_VERSION,
            "producer_version": contract.KEY_PRODUCER,
            "options": contract.KEY_OPTIONS,
            "char_ids": contract.KEY_CHARS,
            "quantization": contract.KEY_QUANT,
            "source": contract.KEY_SOURCE,
        },
        "char_ids": chars.scheme(),
        # version 3: a learned code-point vocabulary (ELMoForManyLangs), read by elmo.mjs too
        "codepoint_format_version": contract.CODEPOINT_FORMAT_VERSION,
        "codepoint_char_ids": {
            "scheme": codepoints.SCHEME_NAME,
            "id_shift": codepoints.ID_SHIFT,
            "char_specials": list(codepoints.CHAR_SPECIALS),
            "word_specials": list(codepoints.WORD_SPECIALS),
            "boundaries": list(codepoints.BOUNDARIES),
        },
        "inputs": {
            "token_chars": contract.INPUT_TOKEN_CHARS,
            "token_index": contract.INPUT_TOKEN_INDEX,
            "word_ids": contract.INPUT_WORD_IDS,
        },
        "outputs": {"layers": contract.OUTPUT_LAYERS},
    }


def contract_text() -> str:
    """:func:`contract_json` as the exact text of ``web/contract.json``."""
    return json.dumps(contract_json(), indent=2) + "\n"


def default_web_dir() -> Path:
    """``web/`` of the source checkout this package runs from (``pip install -e .``), else
    ``./web`` when the current directory is a checkout (the wheel does not ship web/)."""
    installed = Path(__file__).resolve().parents[2] / "web"
    here = Path.cwd() / "web"
    return here if not installed.is_dir() and (here / "index.html").is_file() else installed


def check_web_dir(web_dir: Path) -> Path:
    """``web_dir`` if it holds the page and onnxruntime-web; ElmoError naming the fix otherwise."""
    if not (web_dir / "index.html").is_file() or not (web_dir / "elmo.mjs").is_file():
        raise ElmoError(
            f"{web_dir}: no web/index.html and web/elmo.mjs here (the installed package does not "
            "ship web/); pass --web-dir PATH/TO/web of a source checkout, or install it with "
            "pip install -e ."
        )
    if not (web_dir / ORT_DIST).is_dir():
        raise ElmoError(
            f"{web_dir / ORT_DIST}: onnxruntime-web is not installed; run `{NPM_HINT}`"
        )
    return web_dir


class _Handler(SimpleHTTPRequestHandler):
    """Static files from ``directory`` plus named extra files, with isolation headers."""

    extra: Mapping[str, Path] = {}
    quiet = True
    timeout = CLIENT_TIMEOUT

    def parse_request(self) -> bool:
        """The request line and headers, then 421 for a foreign ``Host``, 405 for a method
        other than GET/HEAD (one line of text each); False when answered here."""
        if not super().parse_request():
            return False
        host = self.headers.get("Host", "")
        if not host_allowed(host, HOST_NAMES):
            self._refuse(HTTPStatus.MISDIRECTED_REQUEST,
                         f"Host header {host[:60]!r} is not a name of this server "
                         f"(allowed: {', '.join(HOST_NAMES)})")
            return False
        if self.command not in METHODS:
            self._refuse(HTTPStatus.METHOD_NOT_ALLOWED,
                         f"{self.command[:20]} is not served here (allowed: {', '.join(METHODS)})")
            return False
        return True

    def _refuse(self, status: HTTPStatus, message: str) -> None:
        body = (message + "\n").encode("utf-8", "replace")
        self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", ", ".join(METHODS))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_head(self) -> Any:
        """The file for a GET/HEAD, headers sent (None when answered otherwise: 301, 4xx)."""
        try:
            return self._send_file()
        except Exception as e:  # one line, never a traceback and a dropped connection
            self._refuse(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(e).__name__}")
            return None

    def _send_file(self) -> Any:
        target = self.path.split("?", 1)[0].split("#", 1)[0]
        if len(target) > MAX_PATH:
            self._refuse(HTTPStatus.REQUEST_URI_TOO_LONG,
                         f"request path: longer than {MAX_PATH} bytes")
            return None
        problem = _malformed(target)
        if problem:
            self._refuse(HTTPStatus.BAD_REQUEST, f"request path: {problem}")
            return None
        path = urllib.parse.unquote(target, errors="strict")
        extra = self.extra.get(path.lstrip("/"))
        if extra is not None:  # the model the command was given: wherever it lies
            return self._open(Path(os.path.realpath(extra)))
        root = os.path.realpath(self.directory)
        real = _inside(root, os.path.join(root, *path.split("/")))
        if real is not None and os.path.isdir(real):
            if not target.endswith("/"):
                self.send_response(HTTPStatus.MOVED_PERMANENTLY)
                self.send_header("Location", target + "/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            real = _inside(root, os.path.join(real, "index.html"))  # no listings
        if real is None:
            self._refuse(HTTPStatus.NOT_FOUND, "not found")
            return None
        return self._open(Path(real))

    def _open(self, path: Path) -> Any:
        """``path`` opened (a regular file, its last component not a link), headers sent;
        404 (one line) otherwise."""
        try:
            # no link followed; a FIFO must not block the open (it is refused just below)
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            self._refuse(HTTPStatus.NOT_FOUND, "not found")
            return None
        handle = os.fdopen(fd, "rb")
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            handle.close()
            self._refuse(HTTPStatus.NOT_FOUND, "not found")
            return None
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Length", str(info.st_size))
        self.end_headers()
        return handle

    def end_headers(self) -> None:
        for name, value in ISOLATION_HEADERS.items():
            self.send_header(name, value)
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        if not self.quiet:
            super().log_message(format, *args)


def _malformed(target: str) -> str | None:
    """What is wrong with a request path (``/a/b.js``, still %-encoded), or None."""
    if not target.startswith("/"):
        return "expected an absolute path"
    try:
        path = urllib.parse.unquote(target, errors="strict")
    except UnicodeDecodeError:
        return "not UTF-8 once decoded"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return "a NUL or another control character"
    if "\\" in path:
        return "a backslash"
    segments = path[1:].split("/")
    if any(s in (".", "..") for s in segments):
        return "a '.' or '..' segment"
    if "" in segments[:-1]:
        return "an empty segment"
    return None


def _inside(root: str, path: str) -> str | None:
    """The real path of ``path`` (links resolved) when it exists inside ``root``, else None."""
    real = os.path.realpath(path)
    if os.path.commonpath([root, real]) != root or not os.path.exists(real):
        return None
    return real


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line for a connection that failed (a client that left mid-answer), no traceback."""
        error = sys.exc_info()[1]
        sys.stderr.write(f"elmo web: {client_address[0]}: {type(error).__name__}: {error}\n")


_Handler.extensions_map = {
    **SimpleHTTPRequestHandler.extensions_map,
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".wasm": "application/wasm",
    ".onnx": "application/octet-stream",
    ".json": "application/json",
}


def make_server(
    web_dir: Path, files: Mapping[str, Path], port: int = 0, quiet: bool = True
) -> ThreadingHTTPServer:
    """An HTTP server on 127.0.0.1:``port`` (0: any free port) for ``web_dir``.

    ``files`` maps URL names (``"model.onnx"``) to files served in their place.
    Raises ElmoError when the port cannot be bound.
    """
    handler = functools.partial(
        type("Handler", (_Handler,), {"extra": dict(files), "quiet": quiet}),
        directory=str(web_dir),
    )
    try:
        return _Server((HOST, port), handler)
    except OSError as e:
        raise ElmoError(f"cannot listen on {HOST}:{port} ({e.strerror or e})") from None


@contextmanager
def serving(
    web_dir: Path, files: Mapping[str, Path], port: int = 0, quiet: bool = True
) -> Iterator[str]:
    """Serve in a background thread; yields the base URL (``http://127.0.0.1:PORT/``);
    ``quiet=False`` logs each request (one line) on stderr."""
    server = make_server(web_dir, files, port, quiet)
    thread = threading.Thread(target=server.serve_forever, name="elmo-web", daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _model_path(model: str | None) -> Path:
    from .loading.model_file import resolve_model

    path = resolve_model(model)  # None: the default; a bundled name; a path
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    return path


@click.command("web")
@click.option("--model", "-m", default=None, metavar="PATH",
              help="Model served to the page: a path or a bundled name (default, default-int8).")
@click.option("--port", "-p", default=DEFAULT_PORT, show_default=True,
              type=click.IntRange(0, 65535),
              help="Port on 127.0.0.1 (0: any free port).")
@click.option("--web-dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="The web/ folder (default: the one of this source checkout).")
def web_command(model: str | None, port: int, web_dir: Path | None) -> None:
    """Serve the in-browser ELMo demo (web/) and a model on 127.0.0.1.

    The browser computes the vectors (onnxruntime-web, WASM); nothing leaves
    the machine. Needs `npm ci --prefix web` once. Stop with Ctrl-C.
    """
    path = _model_path(model)
    web_dir = check_web_dir(web_dir or default_web_dir())
    server = make_server(web_dir, {MODEL_ROUTE: path}, port, quiet=False)
    url = f"http://{HOST}:{server.server_address[1]}/"
    click.echo(f"Serving {web_dir} and {path} at {url} (Ctrl-C stops)", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    finally:
        server.server_close()


if __name__ == "__main__":
    target = default_web_dir() / "contract.json"
    target.write_text(contract_text(), encoding="utf-8")
    print(f"wrote {target}")
