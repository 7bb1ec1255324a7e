"""`elmo web`: the browser demo (web/) and a model, served on 127.0.0.1.

The page runs the model itself with onnxruntime-web (WASM); this server only
hands out files. It sends the cross-origin isolation headers
(``Cross-Origin-Opener-Policy: same-origin``,
``Cross-Origin-Embedder-Policy: require-corp``) without which browsers refuse
WASM threads, and serves the chosen model at ``/model.onnx`` next to the page.

Like `elmo serve` on loopback it answers only requests whose ``Host`` header is
a loopback name (421 otherwise: a DNS-rebinding page cannot read it), only
``GET`` and ``HEAD`` (405 otherwise), and lists no directories (404): its answers
name no file path of this machine.

``web/contract.json`` is what ``web/elmo.mjs`` knows of the model contract
(format name and version, metadata keys, char-id scheme, tensor names). It is
generated from :mod:`elmo_runtime.format.contract` by :func:`contract_json`
(``python -m elmo_runtime.webserve`` rewrites it); a test checks the file
against this function so the two sides cannot drift apart.
"""

from __future__ import annotations

import functools
import json
import threading
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

    def list_directory(self, path: Any) -> None:
        """No listings: a folder without index.html is 404, its contents are not shown."""
        self.send_error(HTTPStatus.NOT_FOUND, "File not found")
        return None

    def _extra_path(self) -> Path | None:
        name = self.path.split("?", 1)[0].split("#", 1)[0].lstrip("/")
        return self.extra.get(name)

    def send_head(self) -> Any:
        path = self._extra_path()
        if path is None:
            return super().send_head()
        try:
            handle = path.open("rb")
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND, f"{path.name}: cannot read the file")
            return None
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Length", str(path.stat().st_size))
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
        return ThreadingHTTPServer((HOST, port), handler)
    except OSError as e:
        raise ElmoError(f"cannot listen on {HOST}:{port} ({e.strerror or e})") from None


@contextmanager
def serving(web_dir: Path, files: Mapping[str, Path], port: int = 0) -> Iterator[str]:
    """Serve in a background thread; yields the base URL (``http://127.0.0.1:PORT/``)."""
    server = make_server(web_dir, files, port)
    thread = threading.Thread(target=server.serve_forever, name="elmo-web", daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _model_path(model: str | None) -> Path:
    from .models import resolve_model

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
