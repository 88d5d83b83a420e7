"""A real HTTP server on 127.0.0.1 that misbehaves on request, for download tests.

Each served path has a mode:
  "range"         answers Range requests with 206 (what Zenodo does)
  "plain"         never looks at Range, always 200 with the whole file
  "ignore-range"  alias of "plain": a server that ignores Range (the client must restart)
  "drop"          the first `failures` GETs send the headers and half the body, then close
  "429"           the first `failures` GETs answer 429 with `Retry-After`
  "500"           the first `failures` GETs answer 500
  "corrupt"       serves bytes that differ from the registered ones (checksum mismatch)
Every request is logged (path, Range header, status, body bytes sent, time) so tests can
assert what was actually transferred.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODES = ("range", "plain", "ignore-range", "drop", "429", "500", "corrupt")


@dataclass
class Served:
    data: bytes
    mode: str = "range"
    failures: int = 1
    retry_after: str | None = "1"
    hits: int = 0


@dataclass
class Request:
    path: str
    range: str | None
    status: int
    sent: int
    time: float = field(default_factory=time.monotonic)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: LoopbackServer

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        rng = self.headers.get("Range")
        served = self.server.files.get(path)
        if served is None:
            return self._reply(path, rng, 404, b"not found\n")
        with self.server.lock:
            served.hits += 1
            failing = served.hits <= served.failures
        if served.mode == "429" and failing:
            extra = {"Retry-After": served.retry_after} if served.retry_after is not None else {}
            return self._reply(path, rng, 429, b"too many requests\n", extra)
        if served.mode == "500" and failing:
            return self._reply(path, rng, 500, b"server error\n")
        data = served.data
        if served.mode == "corrupt":
            data = bytes([data[0] ^ 0xFF]) + data[1:] if data else b"x"
        start = _range_start(rng) if served.mode not in ("plain", "ignore-range") else None
        if start is not None and start >= len(data):
            return self._reply(path, rng, 416, b"", {"Content-Range": f"bytes */{len(data)}"})
        if start is not None:
            status, body = 206, data[start:]
            headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}", "Accept-Ranges": "bytes"}
        else:
            status, body, headers = 200, data, ({"Accept-Ranges": "bytes"} if served.mode == "range" else {})
        if served.mode == "drop" and failing:
            half = body[: max(1, len(body) // 2)]
            self._log(path, rng, status, len(half))
            self._send_headers(status, len(body), headers)
            self.wfile.write(half)
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._reply(path, rng, status, body, headers)

    def _send_headers(self, status: int, length: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()

    def _reply(self, path: str, rng: str | None, status: int, body: bytes, headers: dict | None = None) -> None:
        self._log(path, rng, status, len(body))  # before replying: the client may check the log at once
        self._send_headers(status, len(body), headers or {})
        self.wfile.write(body)

    def _log(self, path: str, rng: str | None, status: int, sent: int) -> None:
        with self.server.lock:
            self.server.log.append(Request(path, rng, status, sent))


def _range_start(value: str | None) -> int | None:
    m = re.fullmatch(r"bytes=(\d+)-", value or "")
    return int(m.group(1)) if m else None


class LoopbackServer(ThreadingHTTPServer):
    """Threaded HTTP server on an ephemeral loopback port; use as a context manager."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, Served] = {}
        self.log: list[Request] = []
        self.lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def handle_error(self, request, client_address) -> None:
        pass  # the "drop" mode breaks connections on purpose

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, path: str, data: bytes, mode: str = "range", failures: int = 1,
            retry_after: str | None = "1") -> str:
        """Serve `data` at `path`; return its URL."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        path = "/" + path.lstrip("/")
        self.files[path] = Served(data, mode, failures, retry_after)
        return self.url + path

    def requests_for(self, path: str) -> list[Request]:
        path = "/" + path.lstrip("/")
        with self.lock:
            return [r for r in self.log if r.path == path]

    def start(self) -> LoopbackServer:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
