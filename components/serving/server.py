"""kdflow serve: a published student behind KServe's own model server, text in, labels out.

    kdflow serve PUBLISH_URI/MODEL_NAME [--http-port 8080]    # the version latest.json names, reloaded as it moves
    kdflow serve PUBLISH_URI/MODEL_NAME/VERSION               # one published version

The model is the version's text model (model.text.int8.xml: the tokenizer and the static int8 student in one
OpenVINO graph), answering under the published model's name in KServe's protocols, on one HTTP port:

    v1  POST /v1/models/NAME:predict   {"instances": ["text", ...]}
        -> {"predictions": [{"label": "positive", "probabilities": {"negative": 0.03, "positive": 0.97}}, ...]}
        (a multi-label model answers "labels": [names above their thresholds] instead of "label")
    v2  POST /v2/models/NAME/infer     {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [n], "data": [...]}]}
        -> outputs "label" (BYTES [n]; a multi-label model's "labels" holds a JSON list of names per text) and
           "probabilities" (FP32 [n, labels], columns in config.json's id2label order)
    GET /v2/health/live, /v2/health/ready, /v2/models/NAME, /metrics (Prometheus)

Every answer carries the version that gave it in the header kdflow-model-version. Concurrent requests are batched
into one model call (up to max_batch_size texts, the first waiting at most max_batch_wait_ms for others); a body over
max_request_bytes is refused with 413 before it is read whole; SIGTERM stops taking requests and finishes those in
flight (uvicorn's graceful shutdown, as KServe runs it). The same code is a KServe custom predictor: the image's
`kdflow serve` in an InferenceService (manifests/serving).
"""

import asyncio
import json
import logging
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdflow.components.common import storage
from kdflow.components.common.errors import KdflowInputError, first_line
from kdflow.components.common.text_model import (
    TEXT_INPUT, TEXT_MODEL_FILE, TEXT_MODEL_WEIGHTS, Labelled, TextClassifier,
)

from .settings import ServeSettings

LATEST = "latest.json"  # as the publish step writes them
MANIFEST = "manifest.json"
SUMMARY = "summary.json"
VERSION_HEADER = "kdflow-model-version"
LABEL_OUTPUT, LABELS_OUTPUT, PROBABILITIES_OUTPUT = "label", "labels", "probabilities"

logger = logging.getLogger("kdflow.serve")


def batch_histogram():
    """Texts per model call, on the server's /metrics beside KServe's own (the default Prometheus registry)."""
    from prometheus_client import Histogram

    return Histogram("kdflow_batch_texts", "Texts per model call, gathered from concurrent requests",
                     buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))


@dataclass(frozen=True)
class Version:
    """A published version loaded for serving."""

    model_name: str
    version: str
    uri: str
    folder: str  # where its files are read from: the version's own folder, or a download of a remote one
    classifier: Labelled  # with probabilities(texts): a TextClassifier, or kdflow bench serve's teacher


def read_json(uri: str) -> dict | None:
    text = storage.read_text(uri)
    return None if text is None else json.loads(text)


def latest_uri_of(model_uri: str) -> str | None:
    """The URI of the version latest.json names, when `model_uri` is a model's folder; None when it is not one.

    The version's folder is found beside latest.json, as publish lays them out, not at the URI latest.json records:
    a model's folder mounted into a container, or copied, is read where it is.
    """
    latest = read_json(storage.join(model_uri, LATEST))
    return None if latest is None else storage.join(model_uri, latest["version"])


def load_version(uri: str, threads: int = 0) -> Version:
    """The text model of the published version at `uri` (a folder, gs:// or s3://), ready to answer.

    Raises:
        KdflowInputError: `uri` is no complete published version, or one without a text model.
    """
    manifest = read_json(storage.join(uri, MANIFEST))
    if manifest is None:
        raise KdflowInputError(
            f"{storage.masked_uri(uri)} holds neither {LATEST} nor {MANIFEST}: give a published version "
            "(PUBLISH_URI/MODEL_NAME/VERSION) or a model's folder (PUBLISH_URI/MODEL_NAME).")
    listed = {entry["path"] for entry in manifest["files"]}
    if TEXT_MODEL_FILE not in listed:
        raise KdflowInputError(
            f"The version {storage.masked_uri(uri)} has no text model ({TEXT_MODEL_FILE}): publish it with a kdflow "
            "whose onnx_export writes one, or see its onnx_report.json for why it was not written.")
    decision = read_json(storage.join(uri, SUMMARY))["publish"]  # the model's name and the version's
    folder = local_files(uri, ["config.json", TEXT_MODEL_FILE, TEXT_MODEL_WEIGHTS])
    classifier = TextClassifier(folder, threads=threads or None)
    started = time.monotonic()
    if classifier.warm_up():  # before it answers anyone: the server is not ready yet, or the old version serves
        logger.info("Version %s answered a text of every length up to %d tokens in %.1f s before serving.",
                    decision["version"], classifier.max_length, time.monotonic() - started)
    return Version(model_name=decision["model"], version=decision["version"], uri=uri, folder=folder,
                   classifier=classifier)


def local_files(uri: str, names: list[str]) -> str:
    """A local folder holding the named files of `uri`: the folder itself, or a download of just those files."""
    if not storage.is_remote(uri):
        return uri
    folder = Path(tempfile.mkdtemp(prefix="kdflow-serve-"))
    for name in names:
        downloaded = Path(storage.local_copy(storage.join(uri, name)))  # alone in a folder of its own
        shutil.move(downloaded, folder / name)
        downloaded.parent.rmdir()
    return str(folder)


class Batcher:
    """Gathers the texts of concurrent requests into model calls of at most `max_size` texts.

    A call takes every request already waiting; when that is fewer than `max_size` texts, it waits up to `max_wait_s`
    for more. One call runs at a time, in a worker thread, so the event loop keeps taking requests meanwhile: those
    become the next call.
    """

    def __init__(self, run, max_size: int, max_wait_s: float):
        self.run, self.max_size, self.max_wait_s = run, max_size, max_wait_s
        self.queue: asyncio.Queue | None = None
        self.worker: asyncio.Task | None = None
        self.texts_per_call = batch_histogram()

    async def submit(self, texts: list[str]):
        """What `run` returns for `texts`, as a part of a call over the texts of every request it was batched with:
        (the version that answered, one row of probabilities per text)."""
        if self.worker is None:  # the first request starts the worker, on the server's event loop
            self.queue = asyncio.Queue()
            self.worker = asyncio.create_task(self.work())
        answer = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, answer))
        return await answer

    async def work(self):
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            size = len(batch[0][0])
            deadline = loop.time() + self.max_wait_s
            while size < self.max_size:
                if self.queue.empty():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                    except asyncio.TimeoutError:
                        break
                else:
                    batch.append(self.queue.get_nowait())
                size += len(batch[-1][0])
            texts = [text for request_texts, _ in batch for text in request_texts]
            self.texts_per_call.observe(len(texts))
            try:
                version, probabilities = await loop.run_in_executor(None, self.run, texts)
            except Exception as error:  # noqa: BLE001 (each waiting request gets the error)
                for _, answer in batch:
                    if not answer.done():
                        answer.set_exception(error)
                continue
            start = 0
            for request_texts, answer in batch:
                if not answer.done():  # a request cancelled meanwhile (its client went away) has no use for it
                    answer.set_result((version, probabilities[start:start + len(request_texts)]))
                start += len(request_texts)


def serving_model_class():
    """The kserve.Model subclass, made on first use: importing kserve parses the process's arguments."""
    import kserve
    from kserve.errors import InvalidInput
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
    from kserve.utils.utils import generate_uuid

    class ServedStudent(kserve.Model):
        """A loaded version: texts in, labels and probabilities out. Given the model's folder (`model_uri`), the
        version latest.json names is swapped in as it moves."""

        def __init__(self, version: Version, settings: ServeSettings, model_uri: str | None = None):
            self.model_uri, self.settings, self.current = model_uri, settings, version
            super().__init__(version.model_name, return_response_headers=True)
            self.ready = True
            self.batcher = Batcher(self.classify, settings.max_batch_size, settings.max_batch_wait_ms / 1000)
            self.stopping = threading.Event()
            self.failed_uri = None  # the last version a reload could not load: tried again once latest.json moves

        def start(self):
            if self.model_uri is not None:
                threading.Thread(target=self.watch, name="kdflow-reload", daemon=True).start()

        def stop(self):
            self.stopping.set()

        def classify(self, texts: list[str]):
            version = self.current  # one version for the whole call, even if a reload swaps it meanwhile
            return version, version.classifier.probabilities(texts)

        def watch(self):
            while not self.stopping.wait(self.settings.reload_interval_s):
                self.reload()

        def reload(self) -> None:
            """Swaps in the version latest.json names, if it moved; a version that fails to load leaves the one
            serving in place, and the log says why."""
            try:
                uri = latest_uri_of(self.model_uri)
            except Exception as error:  # noqa: BLE001 (a storage hiccup: the next poll tries again)
                logger.warning("Could not read %s: %s", LATEST, first_line(error))
                return
            if uri is None or uri in (self.current.uri, self.failed_uri):
                return
            try:
                version = load_version(uri, self.settings.threads)
                if version.model_name != self.name:
                    raise KdflowInputError(f"it is the model {version.model_name!r}, not {self.name!r}")
            except Exception as error:  # noqa: BLE001 (whatever is wrong with it, the served version stays)
                self.failed_uri = uri
                logger.error("Kept version %s serving: the version %s that %s names could not be loaded: %s",
                             self.current.version, storage.masked_uri(uri), LATEST, first_line(error))
                return
            logger.info("Now serving version %s (was %s).", version.version, self.current.version)
            replaced, self.current, self.failed_uri = self.current, version, None
            if replaced.folder != replaced.uri:  # a download: its files are no longer read (the model is in memory)
                shutil.rmtree(replaced.folder, ignore_errors=True)

        async def predict(self, payload, headers=None, response_headers=None):
            v2 = isinstance(payload, InferRequest)
            texts = self.texts_of_v2(payload) if v2 else self.texts_of_v1(payload)
            version, probabilities = await self.batcher.submit(texts)
            if response_headers is not None:
                response_headers[VERSION_HEADER] = version.version
            answers = version.classifier.answers(probabilities)
            if not v2:
                return {"predictions": [answer_v1(answer, version.classifier.multi_label) for answer in answers]}
            multi_label = version.classifier.multi_label
            labels = [json.dumps(answer.labels) if multi_label else answer.labels[0] for answer in answers]
            return InferResponse(
                response_id=payload.id or generate_uuid(), model_name=self.name, infer_outputs=[
                    InferOutput(name=LABELS_OUTPUT if multi_label else LABEL_OUTPUT, shape=[len(labels)],
                                datatype="BYTES", data=labels),
                    InferOutput(name=PROBABILITIES_OUTPUT, shape=list(probabilities.shape), datatype="FP32",
                                data=probabilities.astype(np.float32).flatten().tolist()),
                ])

        def texts_of_v1(self, payload) -> list[str]:
            if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list):
                raise InvalidInput('The v1 request must be JSON, {"instances": ["text", ...]}, sent with '
                                   "Content-Type: application/json.")
            return self.checked(payload["instances"])

        def texts_of_v2(self, payload) -> list[str]:
            text = payload.get_input_by_name(TEXT_INPUT)
            if text is None or text.datatype != "BYTES" or len(text.shape) != 1:
                raise InvalidInput(f'The v2 request must have one input named "{TEXT_INPUT}", datatype BYTES, '
                                   "shape [number of texts].")
            values = text.as_numpy().tolist()  # str over REST, bytes over gRPC
            try:
                return self.checked([value.decode("utf-8") if isinstance(value, bytes) else value
                                     for value in values])
            except UnicodeDecodeError:
                raise InvalidInput(f'The input "{TEXT_INPUT}" holds bytes that are not UTF-8 text.') from None

        def checked(self, texts) -> list[str]:
            if not texts or len(texts) > self.settings.max_texts:
                raise InvalidInput(f"A request must hold 1 to {self.settings.max_texts} texts; it held {len(texts)}.")
            for index, text in enumerate(texts):
                if not isinstance(text, str) or not text.strip():
                    raise InvalidInput(f"Text {index} of the request is {'empty' if text == '' else repr(text)[:40]}"
                                       ": each text must be a non-empty string.")
            return texts

    return ServedStudent


def answer_v1(answer, multi_label: bool) -> dict:
    chosen = {"labels": answer.labels} if multi_label else {"label": answer.labels[0]}
    return {**chosen, "probabilities": answer.probabilities}


class BodySizeLimit:
    """ASGI middleware: a request body over `max_bytes` is answered 413 without being read whole (by its
    Content-Length, or as it arrives when chunked); a body within it is passed on as received."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self.refuse(send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await self.refuse(send)
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def refuse(self, send):
        message = json.dumps({"error": f"The request body is larger than {self.max_bytes} bytes: send fewer or "
                                       "shorter texts per request."}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(message)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": message})


def serve(model_uri: str, settings: ServeSettings) -> None:
    """Loads the model at `model_uri` and serves it until SIGTERM or SIGINT.

    Raises:
        KdflowInputError: `model_uri` is no published version or model folder, before the server starts.
    """
    log_to_stderr()  # from the first load on: it says how long the warm-up took
    latest_uri = latest_uri_of(model_uri)  # None: one fixed version
    version = load_version(latest_uri or model_uri, settings.threads)
    serve_version(version, settings, model_uri if latest_uri else None)


def log_to_stderr() -> None:
    """kdflow's serving messages on stderr, once, beside KServe's own."""
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def serve_version(version: Version, settings: ServeSettings, model_uri: str | None = None) -> None:
    """Serves a loaded version until SIGTERM or SIGINT; given the model's folder, the one latest.json names."""
    log_to_stderr()
    model = serving_model_class()(version, settings, model_uri)
    import kserve
    from kserve import model_server

    model_server.app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    logger.info("Serving %s version %s from %s on port %d.", model.name, version.version,
                storage.masked_uri(version.uri), settings.http_port)
    kserve.ModelServer(http_port=settings.http_port, workers=1, enable_grpc=False).start([model])
