"""A loopback HTTP server for download tests: serves a folder, honours Range, injects faults on cue.

    with FaultServer(root, every=5, faults=("500", "cut", "stall"), stall_s=3) as server:
        fetch(server.url + "a.warc.gz", dest)
        assert any(r.range for r in server.log)

Faults are deterministic: they fall on request numbers (every ``GET`` counts, starting at 1), either
every ``every``-th request cycling through ``faults``, or as ``script={n: fault}``. The kinds:

- ``500`` / ``503`` / ``429``: that status with a short body (``503`` and ``429`` add ``Retry-After: 0``);
- ``cut``: the full headers, then half of the body, then the connection is closed (FIN);
- ``reset``: like ``cut`` but the connection is aborted (RST), so the client sees a reset;
- ``stall``: the headers and a quarter of the body, then nothing for ``stall_s`` seconds, then a close;
- ``stall_headers``: nothing at all for ``stall_s`` seconds, then a close;
- ``corrupt``: the whole body, with 64 bytes in its middle inverted (same length, so only a content
  check can tell);
- ``ignore_range``: this reply ignores a Range header (a 200 with the whole file).

``ignore_range=True`` makes every reply ignore Range. Replies carry an ``ETag`` and ``Last-Modified``;
``If-Range`` with another ETag gets the whole file (as RFC 9110 says). ``HEAD`` is answered (never
faulted), so S3 clients in path style (``/bucket/key``) can use the server too. Every request is
logged in :attr:`FaultServer.log`.
"""

from __future__ import annotations

import dataclasses
import email.utils
import http.server
import os
import re
import socket
import struct
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path

FAULTS = ("500", "503", "429", "cut", "reset", "stall", "stall_headers", "corrupt", "ignore_range")
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_BLOCK = 64 * 1024


@dataclasses.dataclass
class Request:
    """One request as the server saw and answered it."""

    n: int  # 1-based number among the GET requests (0 for HEAD)
    method: str
    path: str
    range: str | None
    if_range: str | None
    status: int = 0
    fault: str | None = None
    sent: int = 0  # body bytes written


class FaultServer:
    """A threaded HTTP server on 127.0.0.1 (a free port) serving ``root``, with scheduled faults."""

    def __init__(self, root: str | os.PathLike[str], *, every: int = 0, faults: tuple[str, ...] = ("500",),
                 script: dict[int, str] | None = None, stall_s: float = 3.0, ignore_range: bool = False,
                 only: Callable[[str], bool] | None = None):
        for f in (*faults, *(script or {}).values()):
            if f not in FAULTS:
                raise ValueError(f"unknown fault '{f}' (known: {', '.join(FAULTS)})")
        self.root = Path(root).resolve()
        self.every = every
        self.faults = tuple(faults)
        self.script = dict(script or {})
        self.stall_s = stall_s
        self.ignore_range = ignore_range
        self.only = only  # faults only fall on paths it accepts (others still count as requests)
        self.log: list[Request] = []
        self._lock = threading.Lock()
        self._count = 0
        self._stop = threading.Event()
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    # -- life cycle ----------------------------------------------------------------------------------

    def start(self) -> FaultServer:
        handler = type("Handler", (_Handler,), {"server_ref": self})
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes stalled replies
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port it listens (or, once stopped, listened) on."""
        assert self._port, "the server was never started"
        return self._port

    @property
    def url(self) -> str:
        """The root URL, with a trailing slash."""
        return f"http://127.0.0.1:{self.port}/"

    # -- schedule and log ----------------------------------------------------------------------------

    def _next(self, method: str, path: str, rng: str | None, if_range: str | None) -> Request:
        with self._lock:
            n = 0
            if method == "GET":
                self._count += 1
                n = self._count
            req = Request(n=n, method=method, path=path, range=rng, if_range=if_range)
            if n and (self.only is None or self.only(path)):
                if n in self.script:
                    req.fault = self.script[n]
                elif self.every and n % self.every == 0:
                    req.fault = self.faults[(n // self.every - 1) % len(self.faults)]
            self.log.append(req)
            return req

    def requests(self, path_suffix: str = "", method: str = "GET") -> list[Request]:
        with self._lock:
            return [r for r in self.log if r.method == method and r.path.endswith(path_suffix)]

    def faults_served(self) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._lock:
            for r in self.log:
                if r.fault:
                    out[r.fault] = out.get(r.fault, 0) + 1
        return out


class _Handler(http.server.BaseHTTPRequestHandler):
    server_ref: FaultServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass  # the test reads FaultServer.log instead

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._serve(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(head=False)

    # -- one reply -----------------------------------------------------------------------------------

    def _serve(self, head: bool) -> None:
        srv = self.server_ref
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        req = srv._next("HEAD" if head else "GET", path, self.headers.get("Range"), self.headers.get("If-Range"))
        self.close_connection = True
        fault = req.fault
        if fault == "stall_headers":
            srv._stop.wait(srv.stall_s)
            self._abort(req, rst=False)
            return
        if fault in ("500", "503", "429"):
            extra = {"Retry-After": "0"} if fault != "500" else {}
            self._reply_error(req, int(fault), b"injected fault\n", extra)
            return
        file = (srv.root / path.lstrip("/")).resolve()
        if not file.is_relative_to(srv.root) or not file.is_file():
            self._reply_error(req, 404, b"not found\n", {})
            return
        data = file.read_bytes()
        size = len(data)
        st = file.stat()
        etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
        start, end, status = 0, size, 200
        use_range = req.range is not None and not srv.ignore_range and fault != "ignore_range"
        if use_range and req.if_range is not None and req.if_range != etag:
            use_range = False  # the client's copy is of another version: send the whole file
        if use_range:
            m = _RANGE_RE.match(req.range.strip())
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = min(size, int(m.group(2)) + 1) if m.group(2) else size
                else:  # a suffix range: the last N bytes
                    start = max(0, size - int(m.group(2)))
                if start >= size or start >= end:
                    self._reply_error(req, 416, b"", {"Content-Range": f"bytes */{size}"})
                    return
                status = 206
        body = data[start:end]
        if fault == "corrupt" and len(body) > 128:
            mid = len(body) // 2
            body = body[:mid] + bytes(b ^ 0xFF for b in body[mid:mid + 64]) + body[mid + 64:]
        req.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.send_header("Connection", "close")
        self.end_headers()
        if head:
            return
        try:
            if fault in ("cut", "reset"):
                self._send(req, body[: len(body) // 2])
                self._abort(req, rst=fault == "reset")
            elif fault == "stall":
                self._send(req, body[: len(body) // 4])
                srv._stop.wait(srv.stall_s)
                self._abort(req, rst=False)
            else:
                self._send(req, body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. its timeout): nothing more to do

    def _send(self, req: Request, body: bytes) -> None:
        for i in range(0, len(body), _BLOCK):
            self.wfile.write(body[i:i + _BLOCK])
            req.sent += min(_BLOCK, len(body) - i)
        self.wfile.flush()

    def _reply_error(self, req: Request, status: int, body: bytes, headers: dict[str, str]) -> None:
        req.status = status
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _abort(self, req: Request, rst: bool) -> None:
        """End the connection now: a FIN, or with ``rst`` a reset."""
        req.status = req.status or -1
        try:
            self.wfile.flush()
        except OSError:
            pass
        sock = self.connection
        try:
            if rst:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
