"""A real S3 server for the tests (moto's server mode) and a proxy that can make requests to a store fail.

The server runs in its own process, as a MinIO or SeaweedFS would: kdflow reaches it only through the standard AWS
variables (`AWS_ENDPOINT_URL` and a dummy key), and a kdflow subprocess reaches it the same way.
"""

import http.client
import http.server
import os
import subprocess
import sys
import threading
import time
import urllib.request

from gcs_emulator import free_port


class MotoServer:
    """moto's S3 server on a free port. With `check_credentials` it refuses every key it was not given (moto's IAM
    checks), as a server with a wrong key configured does."""

    def __init__(self, check_credentials: bool = False):
        self.port, self.process = free_port(), None
        self.environment = {"INITIAL_NO_AUTH_ACTION_COUNT": "0"} if check_credentials else {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env={**os.environ, **self.environment}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1)
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("moto's S3 server did not start")

    def stop(self) -> None:
        if self.process:
            self.process.kill()
            self.process.wait()
            self.process = None


class FailingProxy:
    """Forwards HTTP to a store on `target_port` (any method, HEAD included, which S3 clients send); requests whose
    `METHOD path` contains `match` get a 503, `fail_next` of them, after `pass_first` of them went through."""

    def __init__(self, target_port: int):
        self.fail_next, self.pass_first, self.match, self.failed = 0, 0, "", 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # answers `Expect: 100-continue`, which botocore sends with a PUT's body

            def forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                matched = proxy.match in f"{self.command} {self.path}"
                if proxy.pass_first and matched:
                    proxy.pass_first -= 1
                elif proxy.fail_next and matched:
                    proxy.fail_next -= 1
                    proxy.failed += 1
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", target_port, timeout=30)
                skipped = ("host", "content-length", "expect")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skipped}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                payload = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(key, value.replace(f":{target_port}", f":{proxy.port}"))
                # A HEAD's answer has no body but tells the object's size.
                length = response.getheader("Content-Length", "0") if self.command == "HEAD" else len(payload)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = forward

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
