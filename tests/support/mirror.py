"""A model mirror on loopback for `elmo pull` tests: serves files from memory, honours
HTTP Range (or not), can go slowly, lie about sizes or redirect, and logs each request."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Mirror:
    """``files``: URL path → bytes. ``log``: (path, Range header or None) per request."""

    files: dict[str, bytes] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    log: list[tuple[str, str | None]] = field(default_factory=list)
    chunk: int = 1 << 16
    delay_s: float = 0.0  # sleep after each chunk (a slow server)
    honour_range: bool = True
    declare_extra: int = 0  # Content-Length this many bytes more than sent (a cut transfer)
    url: str = ""


@contextmanager
def serve_mirror(mirror: Mirror) -> Iterator[Mirror]:
    """Run ``mirror`` on 127.0.0.1 (a free port) in a thread; ``mirror.url`` is its root."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            mirror.log.append((self.path, self.headers.get("Range")))
            if self.path in mirror.redirects:
                self.send_response(302)
                self.send_header("Location", mirror.redirects[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = mirror.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            start = 0
            wanted = self.headers.get("Range")
            if wanted and mirror.honour_range:
                start = int(wanted.removeprefix("bytes=").partition("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body) + mirror.declare_extra))
            self.end_headers()
            try:
                for i in range(0, len(body), mirror.chunk):
                    self.wfile.write(body[i:i + mirror.chunk])
                    self.wfile.flush()
                    if mirror.delay_s:
                        time.sleep(mirror.delay_s)
            except (BrokenPipeError, ConnectionResetError):
                pass
            if mirror.declare_extra:
                self.close_connection = True

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    mirror.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield mirror
    finally:
        server.shutdown()
        server.server_close()
