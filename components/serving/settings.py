"""kdflow serve's settings, declared once: the command's flags (dashes for underscores) and their defaults come from
them. Light (standard library only), so the command line imports it without loading a model runtime."""

from dataclasses import dataclass, field

from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.settings import CheckedSettings, check_positive


def option(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ServeSettings(CheckedSettings):
    """How kdflow serve runs; each field is a flag of the command (dashes for underscores)."""

    http_port: int = option(8080, "The HTTP port (KServe's default).")
    max_batch_size: int = option(32, "Most texts in one model call, gathered from concurrent requests.")
    max_batch_wait_ms: float = option(2.0, "How long a request may wait for others to share its model call.")
    max_texts: int = option(256, "Most texts in one request.")
    max_request_bytes: int = option(1_000_000, "Largest request body; a larger one is answered 413.")
    reload_interval_s: float = option(10.0, "How often latest.json is read, when serving a model's folder.")
    threads: int = option(0, "CPU threads of the model; 0 lets OpenVINO choose (all cores).")

    def check(self):
        check_positive(self, "max_batch_size", "max_texts", "max_request_bytes", "reload_interval_s")
        if not 0 < self.http_port < 65536:
            raise KdflowInputError(f"http_port={self.http_port} must be a TCP port, 1 to 65535.")
        if self.max_batch_wait_ms < 0 or self.threads < 0:
            raise KdflowInputError("max_batch_wait_ms and threads must be 0 or more.")
