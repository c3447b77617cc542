"""A hostile HTTP server on loopback: each mode is one way a broken or malicious platform answers.

It speaks just enough HTTP/1.1, by hand on raw sockets, to answer the way no well-behaved framework
would: bodies that never end, trickle a byte at a time, decompress to gigabytes, redirect with a run in
the body, echo the credentials they were sent. Every request it gets is recorded, with its headers.

A test module with misbehaviours of its own (an endless listing, a feed stamped in the future) sets
``answer`` to a callable taking the :class:`Exchange`; it answers every request instead of ``mode``.
"""

from __future__ import annotations

import functools
import json
import socket
import socketserver
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

RUN_ID = "run_asked_for"
FLOW_ID = "flow_asked_for"
BOMB_BYTES = 256 * 1024 * 1024
"""What the compressed bomb expands to; it travels as about 250 KiB."""
TRICKLE_PAUSE = 0.05


def run_body(run_id: str = RUN_ID, status: str = "processing", flow_id: str = FLOW_ID) -> bytes:
    return json.dumps({"id": run_id, "flow_id": flow_id, "status": status}).encode()


def gzip_zeros(size: int) -> bytes:
    """A gzip member of ``size`` zero bytes, compressed in pieces so making it never holds ``size`` bytes."""
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    piece = bytes(1024 * 1024)
    parts = [packer.compress(piece) for _ in range(size // len(piece))]
    parts.append(packer.flush())
    return b"".join(parts)


Answer = Callable[["Exchange"], None]


class Exchange:
    """One request received and the socket to answer it on."""

    def __init__(self, sock: socket.socket, head: bytes) -> None:
        self.sock = sock
        lines = head.decode("latin-1").split("\r\n")
        self.method, self.path, _ = lines[0].split(" ", 2)
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}

    def send(self, status: int, body: bytes = b"", **headers: str) -> None:
        head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Content-Type: application/json"]
        head += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)

    def send_chunked(self, chunks: Iterator[bytes], **headers: str) -> None:
        head = ["HTTP/1.1 200 OK", "Transfer-Encoding: chunked", "Content-Type: application/json"]
        head += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
        self.sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        for chunk in chunks:
            self.sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")

    def credentials(self) -> str:
        return " ".join(v for k, v in self.headers.items() if k in ("authorization", "x-api-key"))


def _huge(ex: Exchange) -> None:
    ex.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1099511627776\r\n\r\n")
    block = b" " * 65536
    while True:
        ex.sock.sendall(block)


def _endless(ex: Exchange) -> None:
    block = b"[" * 65536
    ex.send_chunked(iter(lambda: block, None))


@functools.cache
def bomb() -> bytes:
    return gzip_zeros(BOMB_BYTES)


def _gzip_bomb(ex: Exchange) -> None:
    ex.send(200, bomb(), Content_Encoding="gzip")


def _trickle(ex: Exchange) -> None:
    body = run_body()
    ex.sock.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body) + 10_000}\r\n\r\n".encode())
    while True:
        ex.sock.sendall(b" ")
        time.sleep(TRICKLE_PAUSE)


def _trickled_headers(ex: Exchange) -> None:
    ex.sock.sendall(b"HTTP/1.1 200 OK\r\n")
    while True:
        ex.sock.sendall(b"X")
        time.sleep(TRICKLE_PAUSE)


def _retry_after(value: str) -> Answer:
    def answer(ex: Exchange) -> None:
        ex.send(429, b'{"detail": "slow down"}', Retry_After=value)

    return answer


def _echo_error(ex: Exchange) -> None:
    ex.send(401, json.dumps({"detail": f"invalid credentials: {ex.credentials()}"}).encode())


def _echo_html(ex: Exchange) -> None:
    ex.send(502, f"<html><title>Bad {ex.credentials()}</title></html>".encode(), Content_Type="text/html")


def _echo_status(ex: Exchange) -> None:
    ex.send(200, run_body(status=ex.credentials()))


def completed_run(ex: Exchange) -> None:
    """A well-behaved answer: the run asked for, completed."""
    ex.send(200, run_body(run_id=ex.path.rsplit("/", 1)[-1], status="completed"))


def _foreign_run(ex: Exchange) -> None:
    ex.send(200, run_body(run_id="someone_elses_run", status="completed"))


def _foreign_flow(ex: Exchange) -> None:
    ex.send(200, run_body(flow_id="another_flow", status="completed"))


def _redirect(ex: Exchange) -> None:
    ex.send(302, run_body(status="completed"), Location="http://127.0.0.1:9/elsewhere")


def _deep_json(ex: Exchange) -> None:
    depth = 100_000
    ex.send(200, b"[" * depth + b"]" * depth)


def _deep_metadata(ex: Exchange) -> None:
    depth = 500
    run = json.loads(run_body(status="completed"))
    body = json.dumps(run)[:-1] + ', "metadata": ' + '{"a": ' * depth + "1" + "}" * depth + "}"
    ex.send(200, body.encode())


def _wrong_shape(ex: Exchange) -> None:
    ex.send(200, b'{"id": ["not", "an", "id"], "status": {"nested": true}}')


def _not_an_object(ex: Exchange) -> None:
    ex.send(200, b'["a", "list", "not", "a", "run"]')


MODES: dict[str, Answer] = {
    "huge body": _huge,
    "endless chunked body": _endless,
    "gzip bomb": _gzip_bomb,
    "trickled body": _trickle,
    "trickled headers": _trickled_headers,
    "echoed credentials in an error": _echo_error,
    "echoed credentials in an HTML title": _echo_html,
    "echoed credentials as a status": _echo_status,
    "foreign run": _foreign_run,
    "run of another flow": _foreign_flow,
    "redirect with a run in its body": _redirect,
    "deep JSON": _deep_json,
    "deep metadata": _deep_metadata,
    "wrongly shaped run": _wrong_shape,
    "list instead of a run": _not_an_object,
}
RETRY_AFTER_SHAPES = {
    "an hour": "3600",
    "a date in 2099": "Wed, 21 Oct 2099 07:28:00 GMT",
    "the last date there is": "Fri, 31 Dec 9999 23:59:59 GMT",
    "inf": "inf",
    "nan": "nan",
    "1e400": "1e400",
    "negative": "-30",
    "garbage": "soon, maybe",
    "a date without a zone": "Wed, 21 Oct 2099 07:28:00",
    "empty": "",
}
MODES.update({f"Retry-After {name}": _retry_after(value) for name, value in RETRY_AFTER_SHAPES.items()})


class HostileServer(socketserver.ThreadingTCPServer):
    """Answers every request with the current ``mode``; the records say what it was sent."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = "foreign run"
        self.modes_by_run: dict[str, Answer] = {}
        """Runs answered otherwise than ``mode``, by run id (the last segment of the path)."""
        self.answer: Answer | None = None
        """When set, answers every request not in ``modes_by_run`` instead of ``mode``."""
        self.requests: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> HostileServer:
        bomb()  # made before any test measures memory
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.shutdown()
        self.server_close()


class _Handler(socketserver.BaseRequestHandler):
    server: HostileServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(30)
        try:
            while True:
                read = _read_head(sock)
                if read is None:
                    return
                head, body_start = read
                exchange = Exchange(sock, head)
                length = int(exchange.headers.get("content-length", "0") or 0) - len(body_start)
                while length > 0:
                    length -= len(sock.recv(min(length, 65536)))
                self.server.requests.append(
                    {"method": exchange.method, "path": exchange.path, "headers": exchange.headers}
                )
                run_id = exchange.path.rsplit("/", 1)[-1]
                answer = self.server.modes_by_run.get(run_id) or self.server.answer or MODES[self.server.mode]
                answer(exchange)
        except OSError:  # the client gave up: that is the point of most modes
            return


def _read_head(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """The request's head, and what of its body came in the same reads."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body_start = data.partition(b"\r\n\r\n")
    return head, body_start
