"""kdflow serve: a published tiny student behind KServe's model server, in its own process, asked by a real HTTP
client (httpx) over the loopback: both protocols, bad requests, batching, reloads as latest.json moves, shutdown."""

import asyncio
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pandas
import pytest
import torch
from test_onnx_export import run_export, save_classifier
from test_publish import write_metrics
from transformers import (
    AutoTokenizer, BertConfig, BertForSequenceClassification, DistilBertConfig, DistilBertForSequenceClassification,
)

from kdflow.components.common.data import load_prepared
from kdflow.components.common.text_model import TextClassifier
from kdflow.components.publish import task as publish_task
from kdflow.components.publish.settings import Files, Settings
from kdflow.pipelines import cli

pytestmark = pytest.mark.slow
MODEL = "sentiment"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`kdflow serve` in its own process, its output in a log file."""

    def __init__(self, model_uri: str, log: Path, *options: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "w") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kdflow.pipelines.cli", "serve", model_uri, "--http-port", str(self.port),
                 *options], stdout=output, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 90.0) -> "Server":
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"kdflow serve exited with {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"kdflow serve was not ready in {timeout_s} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def export_student(folder: Path, tokenizer_dir, data_dir, seed: int) -> Path:
    """onnx_export's output folder of a tiny DistilBERT student (its weights drawn with `seed`)."""
    torch.manual_seed(seed)
    config = DistilBertConfig(vocab_size=len(AutoTokenizer.from_pretrained(str(tokenizer_dir))), dim=32, n_layers=2,
                              n_heads=2, hidden_dim=64, max_position_embeddings=128,
                              id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    student = save_classifier(DistilBertForSequenceClassification(config), folder / "student", tokenizer_dir)
    run_export(student, data_dir, folder)
    return folder


def publish(exported: Path, destination: str, version: str, accuracy: float, data_dir) -> None:
    """The publish step, as the pipeline runs it, on an exported student recorded as this accurate."""
    write_metrics(exported, accuracy)
    publish_task.run(
        Settings(publish_uri=destination, model_name=MODEL, model_version=version, promotion_tolerance=0.0,
                 run_id="run-1"),
        Files(data=str(data_dir), student=str(exported / "student"), onnx_model=str(exported / "onnx"),
              teacher_metrics=str(exported / "teacher.json"), student_metrics=str(exported / "student.json"),
              publish_report=str(exported / f"{version}.md")))


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tokenizer_dir, prepared_data_dir):
    """Two exported students (different weights): the first and second versions a model's folder gets."""
    return [export_student(tmp_path_factory.mktemp(f"export-{seed}"), tokenizer_dir, prepared_data_dir, seed)
            for seed in (0, 1)]


@pytest.fixture(scope="module")
def published(tmp_path_factory, exports, prepared_data_dir) -> str:
    """A local destination where the model's version v1 is published and promoted."""
    destination = str(tmp_path_factory.mktemp("published"))
    publish(exports[0], destination, "v1", 0.90, prepared_data_dir)
    return destination


@pytest.fixture(scope="module")
def server(published, tmp_path_factory):
    running = Server(f"{published}/{MODEL}", tmp_path_factory.mktemp("serve") / "serve.log").wait_ready()
    yield running
    assert running.stop() == 0, running.output()


@pytest.fixture(scope="module")
def texts(prepared_data_dir) -> list[str]:
    return load_prepared(str(prepared_data_dir)).splits["test"]["text"][:12]


def test_v1_answers_labels_and_probabilities_of_the_published_text_model(server, published, texts):
    response = httpx.post(f"{server.url}/v1/models/{MODEL}:predict", json={"instances": texts}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["kdflow-model-version"] == "v1"
    predictions = response.json()["predictions"]
    expected = TextClassifier(f"{published}/{MODEL}/v1")
    probabilities = expected.probabilities(texts)
    assert [prediction["label"] for prediction in predictions] == [
        expected.label_names[index] for index in probabilities.argmax(axis=1)]
    assert all(set(prediction["probabilities"]) == {"negative", "positive"} for prediction in predictions)
    served = np.array([[prediction["probabilities"][name] for name in expected.label_names]
                       for prediction in predictions])
    assert np.abs(served - probabilities).max() < 1e-5
    # It answered a text of every length before it was ready.
    assert f"Version v1 answered a text of every length up to {expected.max_length} tokens" in server.output()


def test_v2_answers_the_open_inference_protocol(server, texts):
    request = {"id": "request-7", "inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": texts[:3]}]}
    response = httpx.post(f"{server.url}/v2/models/{MODEL}/infer", json=request, timeout=30)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["id"], answer["model_name"]) == ("request-7", MODEL)
    outputs = {output["name"]: output for output in answer["outputs"]}
    assert (outputs["label"]["datatype"], outputs["label"]["shape"]) == ("BYTES", [3])
    assert set(outputs["label"]["data"]) <= {"negative", "positive"}
    assert (outputs["probabilities"]["datatype"], outputs["probabilities"]["shape"]) == ("FP32", [3, 2])
    v1 = httpx.post(f"{server.url}/v1/models/{MODEL}:predict", json={"instances": texts[:3]}, timeout=30).json()
    assert outputs["label"]["data"] == [prediction["label"] for prediction in v1["predictions"]]
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/ready"):
        assert httpx.get(server.url + path, timeout=10).status_code == 200, path
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert f'request_predict_seconds_count{{model_name="{MODEL}"}}' in metrics


V2 = f"/v2/models/{MODEL}/infer"
V1 = f"/v1/models/{MODEL}:predict"
BAD_REQUESTS = {
    "malformed JSON": (V1, b'{"instances": ["a review"', 400),
    "instances not a list": (V1, json.dumps({"instances": "a review"}).encode(), 400),
    "an empty string": (V1, json.dumps({"instances": ["a review", ""]}).encode(), 400),
    "a number for a text": (V1, json.dumps({"instances": [7]}).encode(), 400),
    "no texts": (V1, json.dumps({"instances": []}).encode(), 400),
    "too many texts": (V1, json.dumps({"instances": ["a review"] * 257}).encode(), 400),
    "non-UTF-8 bytes": (V1, b'{"instances": ["caf\xe9"]}', 400),
    "a 10 MB body": (V1, json.dumps({"instances": ["word " * 2_000_000]}).encode(), 413),
    "v2 without the text input": (V2, json.dumps({"inputs": [{"name": "review", "datatype": "BYTES", "shape": [1],
                                                              "data": ["a review"]}]}).encode(), 400),
    "v2 of the wrong shape": (V2, json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 1],
                                                          "data": ["a review"]}]}).encode(), 400),
    "v2 of the wrong datatype": (V2, json.dumps({"inputs": [{"name": "text", "datatype": "FP32", "shape": [1],
                                                             "data": [1.0]}]}).encode(), 400),
    "an unknown model": ("/v1/models/other:predict", json.dumps({"instances": ["a review"]}).encode(), 404),
}


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=list(BAD_REQUESTS))
def test_a_bad_request_gets_a_4xx_with_a_message_and_the_server_keeps_serving(server, case):
    path, body, status = BAD_REQUESTS[case]
    response = httpx.post(server.url + path, content=body, headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == status, response.text
    assert response.json()["error"]
    assert httpx.post(server.url + V1, json={"instances": ["a fine film"]}, timeout=30).status_code == 200


def test_a_chunked_body_over_the_limit_is_refused_as_it_arrives(server):
    def chunks():
        yield b'{"instances": ["'
        for _ in range(20):
            yield b"word " * 20_000  # 100 kB each: 2 MB in all, over the 1 MB limit
        yield b'"]}'

    response = httpx.post(server.url + V1, content=chunks(), timeout=30)
    assert response.status_code == 413 and "larger than 1000000 bytes" in response.json()["error"]


def test_concurrent_requests_share_model_calls_and_each_gets_its_own_answer(server, texts):
    async def ask_all():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            return await asyncio.gather(*[client.post(V1, json={"instances": [text]}) for text in texts * 4])

    before = batch_counts(server)
    responses = asyncio.run(ask_all())
    after = batch_counts(server)
    one_by_one = httpx.post(server.url + V1, json={"instances": texts}, timeout=30).json()["predictions"]
    assert [response.json()["predictions"][0]["label"] for response in responses] == [
        prediction["label"] for prediction in one_by_one] * 4
    calls, batched_texts = after[0] - before[0], after[1] - before[1]
    assert batched_texts == len(texts) * 4 and calls < len(texts) * 4  # some calls answered several requests


def batch_counts(server) -> tuple[float, float]:
    """The server's model calls so far and the texts they held (its kdflow_batch_texts histogram)."""
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    values = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
              if line.startswith("kdflow_batch_texts_")}
    return values.get("kdflow_batch_texts_count", 0.0), values.get("kdflow_batch_texts_sum", 0.0)


def test_a_new_champion_is_served_without_downtime_and_a_broken_one_is_refused(tmp_path, exports, prepared_data_dir):
    destination = str(tmp_path / "published")
    publish(exports[0], destination, "v1", 0.90, prepared_data_dir)
    server = Server(f"{destination}/{MODEL}", tmp_path / "serve.log", "--reload-interval-s", "0.2").wait_ready()
    try:
        publish(exports[1], destination, "v2", 0.92, prepared_data_dir)
        seen = set()
        deadline = time.monotonic() + 60
        while "v2" not in seen and time.monotonic() < deadline:
            response = httpx.post(server.url + V1, json={"instances": ["a fine film"]}, timeout=30)
            assert response.status_code == 200, response.text  # no request fails while the version changes
            seen.add(response.headers["kdflow-model-version"])
        assert "v2" in seen, server.output()

        # A champion whose text model cannot be read: the server keeps v2 and says why.
        broken = tmp_path / "broken"
        shutil.copytree(exports[1], broken)
        (broken / "onnx" / "model.text.int8.bin").write_bytes(b"not weights")
        publish(broken, destination, "v3", 0.95, prepared_data_dir)
        deadline = time.monotonic() + 60
        while "Kept version v2 serving" not in server.output() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "Kept version v2 serving" in server.output() and "v3" in server.output()
        response = httpx.post(server.url + V1, json={"instances": ["a fine film"]}, timeout=30)
        assert response.status_code == 200 and response.headers["kdflow-model-version"] == "v2"
    finally:
        assert server.stop() == 0, server.output()


def test_sigterm_finishes_the_requests_in_flight(tmp_path, published, texts):
    server = Server(f"{published}/{MODEL}/v1", tmp_path / "serve.log").wait_ready()

    async def ask_then_stop():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            requests = [asyncio.create_task(client.post(V1, json={"instances": texts * 20})) for _ in range(8)]
            await asyncio.sleep(0.3)  # the requests are sent and in the server's hands
            server.process.send_signal(signal.SIGTERM)
            return await asyncio.gather(*requests)

    responses = asyncio.run(ask_then_stop())
    assert [response.status_code for response in responses] == [200] * 8
    assert server.process.wait(timeout=60) == 0, server.output()


def test_a_gcs_model_is_served_from_downloads_of_its_text_model_alone(gcs, monkeypatch, tmp_path, exports,
                                                                      prepared_data_dir):
    bucket = "kdflow-serve"
    gcs.create_bucket(bucket)
    publish(exports[0], f"gs://{bucket}/models", "v1", 0.90, prepared_data_dir)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    monkeypatch.setenv("TMPDIR", str(downloads))  # the server's temporary folders
    server = Server(f"gs://{bucket}/models/{MODEL}", tmp_path / "serve.log", "--reload-interval-s", "0.2").wait_ready()
    try:
        response = httpx.post(server.url + V1, json={"instances": ["a fine film"]}, timeout=30)
        assert response.status_code == 200 and response.headers["kdflow-model-version"] == "v1"
        [first] = downloads.iterdir()
        assert {path.name for path in first.iterdir()} == {"config.json", "model.text.int8.xml", "model.text.int8.bin"}
        publish(exports[1], f"gs://{bucket}/models", "v2", 0.92, prepared_data_dir)
        deadline = time.monotonic() + 60
        while "Now serving version v2" not in server.output() and time.monotonic() < deadline:
            time.sleep(0.2)
        response = httpx.post(server.url + V1, json={"instances": ["a fine film"]}, timeout=30)
        assert response.headers["kdflow-model-version"] == "v2", server.output()
        [second] = downloads.iterdir()  # the replaced version's download is gone
        assert second != first
    finally:
        assert server.stop() == 0, server.output()


def test_a_folder_that_is_no_published_model_gets_one_sentence_before_serving(tmp_path):
    result = subprocess.run([sys.executable, "-m", "kdflow.pipelines.cli", "serve", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "holds neither latest.json nor manifest.json" in result.stderr


def test_bench_serve_measures_student_and_teacher_servers_under_the_same_load(tmp_path, capsys, published,
                                                                              tokenizer_dir, prepared_data_dir):
    teacher = save_classifier(BertForSequenceClassification(BertConfig(
        vocab_size=len(AutoTokenizer.from_pretrained(str(tokenizer_dir))), hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})), tmp_path / "teacher",
        tokenizer_dir)
    data = tmp_path / "data"
    data.mkdir()
    load_prepared(str(prepared_data_dir)).splits["test"].select_columns(["text", "label"]).to_parquet(
        str(data / "test.parquet"))
    arguments = ["bench", "serve", "--model", f"{published}/{MODEL}", "--teacher", teacher, "--data", str(data),
                 "--concurrency", "1", "4", "--max-length", "64", "--output", str(tmp_path / "bench")]
    # Each pass asks reviews of its own: more than the test split holds is refused before any server starts.
    assert cli.main([*arguments, "--requests", "25", "--passes", "2"]) == 2
    assert "lower either" in capsys.readouterr().err and not (tmp_path / "bench").exists()
    assert cli.main([*arguments, "--requests", "24", "--passes", "2"]) == 0
    result = json.loads((tmp_path / "bench" / "bench_serve.json").read_text())
    for server in ("student", "teacher"):
        assert list(result["figures"][server]) == ["1", "4"]
        for figures in result["figures"][server].values():
            assert figures["requests"] == 48 and figures["per_second"] > 0 and len(figures["per_second_passes"]) == 2
            assert figures["per_second"] == pytest.approx(statistics.median(figures["per_second_passes"]))
            assert figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"]
            assert len(figures["p99_over_p50_passes"]) == 2 and min(figures["p99_over_p50_passes"]) >= 1
            assert 0 <= figures["accuracy"] <= 1
    # The student's answers are the text model's: its accuracy on the drawn reviews is the one it has on them.
    assert result["figures"]["student"]["1"]["accuracy"] == result["figures"]["student"]["4"]["accuracy"]
    student, teacher = (result["figures"][server]["1"] for server in ("student", "teacher"))
    assert result["throughput_ratio"]["1"] == pytest.approx(student["per_second"] / teacher["per_second"])
    assert result["throughput_ratio_passes"]["1"] == pytest.approx(
        [mine / theirs for mine, theirs in zip(student["per_second_passes"], teacher["per_second_passes"])])
    assert "| teacher | 4 | 48 |" in (tmp_path / "bench" / "bench_serve.md").read_text()
    assert 0 <= result["fp32_student_accuracy"] <= 1
    # Its accuracy is the published text model's on the reviews the bench drew (seed 42, as the bench draws them).
    drawn = pandas.read_parquet(data / "test.parquet").sample(n=48, random_state=42)
    classifier = TextClassifier(f"{published}/{MODEL}/v1")
    expected = float((classifier.decisions(classifier.probabilities(drawn["text"].tolist())) == drawn["label"]).mean())
    assert result["figures"]["student"]["1"]["accuracy"] == pytest.approx(expected)


def test_a_version_without_a_text_model_gets_one_sentence_before_serving(tmp_path, exports, prepared_data_dir):
    older = tmp_path / "older"  # as a kdflow before the text model published it
    shutil.copytree(exports[0], older)
    for name in ("model.text.int8.xml", "model.text.int8.bin"):
        (older / "onnx" / name).unlink()
    publish(older, str(tmp_path / "published"), "v1", 0.90, prepared_data_dir)
    result = subprocess.run([sys.executable, "-m", "kdflow.pipelines.cli", "serve",
                             str(tmp_path / "published" / MODEL)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "has no text model (model.text.int8.xml)" in result.stderr.strip().splitlines()[-1]
