"""The HTTP plumbing shared by the tests' stand-ins for API servers that cannot run here (kfp_api_standin.py,
kubernetes_api_standin.py): a threaded HTTP server on 127.0.0.1, HTTPS when given a certificate and its key, that
records every request and sends what the stand-in's `answer` returns, a str as plain text and anything else as JSON.
"""

import json
import ssl
import threading
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict
    headers: Message  # case-insensitive, as HTTP headers are
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)

    def uploaded_file(self) -> bytes:
        """The `uploadfile` part of a multipart/form-data body, byte for byte."""
        boundary = self.headers["Content-Type"].split("boundary=")[1].strip('"').encode()
        for part in self.body.split(b"--" + boundary):
            head, _, content = part.partition(b"\r\n\r\n")
            if b'name="uploadfile"' in head:
                return content[:-2]  # the CRLF before the next boundary
        raise AssertionError("no uploadfile part in the request")


class ApiStandIn:
    """The base of a stand-in, itself a dataclass that declares `certificate` and `requests` and, if it has a
    __post_init__, calls this one."""

    certificate: tuple[str, str] | None  # PEM files of the certificate and its key: serve HTTPS
    requests: list[Request]  # every request, in the order they came

    def __post_init__(self):
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.standin = self
        self.port = self._server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        if self.certificate:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.certificate)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, request: Request) -> tuple[int, Any]:
        """What the API server would answer: (HTTP status, plain text as a str or else a JSON value)."""
        raise NotImplementedError


class _Handler(BaseHTTPRequestHandler):
    def handle_any(self):
        standin = self.server.standin
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = Request(self.command, url.path, {k: v[0] for k, v in parse_qs(url.query).items()}, self.headers, body)
        with standin._lock:
            standin.requests.append(request)
            status, answer = standin.answer(request)
        text = isinstance(answer, str)
        payload = (answer if text else json.dumps(answer)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8" if text else "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any

    def log_message(self, *args):  # keep test output clean
        pass
