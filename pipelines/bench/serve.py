"""`kdflow bench serve`: the served student against what a user would serve instead, under the same load.

    kdflow bench serve --model PUBLISH_URI/MODEL_NAME --teacher TEACHER_DIR --data IMDB_FOLDER --output bench/serve

Two servers on the loopback address, both KServe's model server with kdflow serve's request batching and limits:
- student: `kdflow serve MODEL`, the published text model (tokenizer in the graph, static int8, OpenVINO);
- teacher: a Hugging Face `pipeline("text-classification")` on the fine-tuned teacher (PyTorch fp32), truncating at
  --max-length, served by the same code (`python -m kdflow.pipelines.bench.serve --teacher DIR --http-port PORT`).
At each concurrency (--concurrency, default 1, 8, 32) a closed loop: that many clients each send one review per v1
request and the next once answered, after a warm-up, until --requests are answered or --duration-s has passed.
Both servers run throughout, and the levels are interleaved, student then teacher, over --passes passes, each pass
on reviews of its own, drawn (seeded) from the data's test split: a slower spell of this shared machine falls on
both. Figures per server and concurrency, each the median of the passes' own: answers per second, p50/p95/p99
latency and p99/p50 (with every pass's), and the accuracy of all answers on the reviews' labels. The ratio of
student to teacher is of the medians, with each pass's own. The load generator shares the machine's CPU with the
servers: the figures are for serving and asking on one machine.
Everything goes to OUTPUT/bench_serve.json and a table to OUTPUT/bench_serve.md and stdout.
"""

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.text_model import Labelled

from .train import machine

CONCURRENCY = (1, 8, 32)
WARM_UP_REQUESTS = 16


@dataclass(frozen=True)
class Answers:
    """One pass of one server at one concurrency: how long each answer took, and which label it gave each row."""

    seconds: float
    latencies_s: list[float]
    label_ids: dict[int, int]  # row -> the answer's class id


@dataclass(frozen=True)
class LevelFigures:
    """One server at one concurrency, over every pass: each figure is the median of the passes' own."""

    requests: int  # answers, all passes
    per_second: float
    per_second_passes: list[float]
    p50_ms: float
    p95_ms: float
    p99_ms: float
    p99_over_p50_passes: list[float]
    accuracy: float  # of every answer

    @classmethod
    def of(cls, passes: list[Answers], labels: list[int]) -> "LevelFigures":
        percentiles = np.array([np.percentile(np.array(answers.latencies_s) * 1000, (50, 95, 99))
                                for answers in passes])
        rates = [len(answers.label_ids) / answers.seconds for answers in passes]
        right = [label == labels[row] for answers in passes for row, label in answers.label_ids.items()]
        p50_ms, p95_ms, p99_ms = (float(value) for value in np.median(percentiles, axis=0))
        return cls(requests=len(right), per_second=statistics.median(rates), per_second_passes=rates,
                   p50_ms=p50_ms, p95_ms=p95_ms, p99_ms=p99_ms,
                   p99_over_p50_passes=[float(p99 / p50) for p50, _, p99 in percentiles],
                   accuracy=statistics.fmean(right))


def bench_serve(*, model: str, teacher: str, data: str, output: str, requests: int = 1000, duration_s: float = 60.0,
                concurrency: tuple[int, ...] = CONCURRENCY, passes: int = 3, max_length: int = 256,
                seed: int = 42) -> dict:
    import pandas

    test = Path(data, "test.parquet")
    if not test.exists():
        raise KdflowInputError(f"{data} holds no test.parquet: give a folder with the test split (text, label).")
    reviews = pandas.read_parquet(test, columns=["text", "label"])
    if requests * passes > len(reviews):
        raise KdflowInputError(f"--requests {requests} times --passes {passes} is more than the {len(reviews)} test "
                               "reviews: each pass asks reviews of its own; lower either.")
    reviews = reviews.sample(n=requests * passes, random_state=seed)
    texts, labels = reviews["text"].tolist(), reviews["label"].tolist()
    commands = {
        "student": ["-m", "kdflow.pipelines.cli", "serve", model],
        "teacher": ["-m", "kdflow.pipelines.bench.serve", "--teacher", teacher, "--max-length", str(max_length)],
    }
    answers = {name: {level: [] for level in concurrency} for name in commands}
    with contextlib.ExitStack() as stack:
        servers = {name: stack.enter_context(Server(command, Path(output, f"{name}.log")))
                   for name, command in commands.items()}
        for rows in [range(start, start + requests) for start in range(0, requests * passes, requests)]:
            for level in concurrency:
                for name, server in servers.items():
                    answers[name][level].append(asyncio.run(load(server, texts, rows, level, duration_s)))
    figures = {name: {str(level): LevelFigures.of(level_passes, labels) for level, level_passes in levels.items()}
               for name, levels in answers.items()}
    result = {"machine": machine(), "model": model, "teacher": teacher, "reviews": len(texts), "passes": passes,
              "max_length": max_length, "duration_s": duration_s,
              "figures": {name: {level: asdict(level_figures) for level, level_figures in levels.items()}
                          for name, levels in figures.items()},
              "fp32_student_accuracy": fp32_accuracy(model, texts, labels, max_length),
              "throughput_ratio": {level: figures["student"][level].per_second / figures["teacher"][level].per_second
                                   for level in figures["student"]},
              "throughput_ratio_passes": {level: [student / teacher for student, teacher in zip(
                  figures["student"][level].per_second_passes, figures["teacher"][level].per_second_passes)]
                  for level in figures["student"]}}
    Path(output).mkdir(parents=True, exist_ok=True)
    Path(output, "bench_serve.json").write_text(json.dumps(result, indent=2))
    table = markdown(result)
    Path(output, "bench_serve.md").write_text(table)
    print(table)
    return result


def fp32_accuracy(model: str, texts: list[str], labels: list[int], max_length: int) -> float:
    """The served version's PyTorch student (its pytorch/ folder), fp32 in this process, on the same reviews: what the
    served int8 text model is held to."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kdflow.components.common import storage
    from kdflow.components.serving.server import latest_uri_of

    folder = storage.local_copy(storage.join(latest_uri_of(model) or model, "pytorch"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    student = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32).eval()
    predicted = []
    with torch.inference_mode():
        for start in range(0, len(texts), 32):
            batch = tokenizer(texts[start:start + 32], truncation=True, max_length=max_length, padding=True,
                              return_tensors="pt")
            predicted += student(**batch).logits.argmax(dim=-1).tolist()
    return statistics.fmean(answer == label for answer, label in zip(predicted, labels))


class Server:
    """A server process on a free loopback port, ready on entering, stopped (SIGTERM) on leaving."""

    def __init__(self, arguments: list[str], log: Path):
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.arguments, self.log = arguments, log

    def __enter__(self) -> "Server":
        import httpx

        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "w") as log:
            self.process = subprocess.Popen([sys.executable, *self.arguments, "--http-port", str(self.port)],
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    self.learn_labels()
                    return self
            except httpx.TransportError:
                time.sleep(0.5)
        self.process.kill()
        raise KdflowInputError(f"The server {' '.join(self.arguments)} did not start: see {self.log}.")

    def __exit__(self, *_):
        self.process.terminate()
        self.process.wait(timeout=120)

    def learn_labels(self) -> None:
        """The served model's name (from /v2/models) and its label names' class ids (from one answer)."""
        import httpx

        self.model_name = httpx.get(f"{self.url}/v2/models", timeout=10).json()["models"][0]
        answer = httpx.post(f"{self.url}/v1/models/{self.model_name}:predict", json={"instances": ["a film"]},
                            timeout=60).json()["predictions"][0]
        self.label_ids = {name: index for index, name in enumerate(answer["probabilities"])}


async def load(server: Server, texts: list[str], rows: range, concurrency: int, duration_s: float) -> Answers:
    """A closed loop of `concurrency` clients over the `rows` of `texts`, one per request, after a warm-up.

    aiohttp, as it costs the shared CPU least: at concurrency 32 on the minilm student, 0.4 s of CPU per 1,000 requests,
    where httpx's AsyncClient took 2.7 s and the served student 107 answers/s against 128.
    """
    import aiohttp

    url = f"{server.url}/v1/models/{server.model_name}:predict"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency),
                                     timeout=aiohttp.ClientTimeout(total=300)) as client:
        for row in rows[:WARM_UP_REQUESTS]:
            async with client.post(url, json={"instances": [texts[row]]}) as response:
                response.raise_for_status()
        next_row = iter(rows)
        latencies, label_ids = [], {}
        start = time.perf_counter()
        deadline = start + duration_s

        async def ask():
            while time.perf_counter() < deadline and (row := next(next_row, None)) is not None:
                sent = time.perf_counter()
                async with client.post(url, json={"instances": [texts[row]]}) as response:
                    response.raise_for_status()
                    answer = await response.json()
                latencies.append(time.perf_counter() - sent)
                label_ids[row] = server.label_ids[answer["predictions"][0]["label"]]

        await asyncio.gather(*[ask() for _ in range(concurrency)])
        return Answers(seconds=time.perf_counter() - start, latencies_s=latencies, label_ids=label_ids)


def markdown(result: dict) -> str:
    lines = ["| server | concurrency | answers | per second (passes) | p50 ms | p95 ms | p99 ms | accuracy |",
             "|---|---|---|---|---|---|---|---|"]
    for name, levels in result["figures"].items():
        lines += [f"| {name} | {level} | {f['requests']} | {f['per_second']:.1f} ({spread(f['per_second_passes'])}) | "
                  f"{f['p50_ms']:.1f} | {f['p95_ms']:.1f} | {f['p99_ms']:.1f} | {f['accuracy']:.4f} |"
                  for level, f in levels.items()]
    ratios = ", ".join(f"{ratio:.2f}x at {level} ({spread(result['throughput_ratio_passes'][level], 2)})"
                       for level, ratio in result["throughput_ratio"].items())
    lowest = min(result["figures"]["student"], key=int)
    first = result["figures"]["student"][lowest]
    tails = first["p99_over_p50_passes"]
    lines += ["", f"Student over teacher, answers per second: {ratios}; medians over {result['passes']} passes, each "
              f"pass's own ratios in brackets. Student p99/p50 at concurrency {lowest}: "
              f"{statistics.median(tails):.2f} ({spread(tails, 2)}). The fp32 student (PyTorch) on the same reviews: "
              f"{result['fp32_student_accuracy']:.4f}; served (text model, int8): {first['accuracy']:.4f}."]
    return "\n".join(lines) + "\n"


def spread(values: list[float], digits: int = 1) -> str:
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


class PipelineClassifier(Labelled):
    """The teacher as a user serves it without kdflow: transformers' text-classification pipeline, PyTorch fp32."""

    thresholds = None

    def __init__(self, folder: str, max_length: int):
        from transformers import pipeline

        self.pipeline = pipeline("text-classification", model=folder, device="cpu")
        config = self.pipeline.model.config
        self.label_names = [config.id2label[index] for index in range(config.num_labels)]
        self.max_length = max_length

    def probabilities(self, texts: list[str]) -> np.ndarray:
        rows = self.pipeline(texts, top_k=None, batch_size=len(texts), truncation=True, max_length=self.max_length)
        return np.array([[next(score["score"] for score in row if score["label"] == name) for name in self.label_names]
                         for row in rows], dtype=np.float32)


def serve_teacher(argv: list[str] | None = None) -> None:
    """`python -m kdflow.pipelines.bench.serve --teacher DIR --http-port PORT`: the teacher's pipeline, served."""
    from kdflow.components.serving.server import Version, serve_version
    from kdflow.components.serving.settings import ServeSettings

    parser = argparse.ArgumentParser(description=serve_teacher.__doc__)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--http-port", type=int, default=8080)
    args = parser.parse_args(argv)
    classifier = PipelineClassifier(args.teacher, args.max_length)
    serve_version(Version(model_name="teacher", version="teacher", uri=args.teacher, folder=args.teacher,
                          classifier=classifier),
                  ServeSettings(http_port=args.http_port))


if __name__ == "__main__":
    serve_teacher()
