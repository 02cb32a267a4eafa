"""The student as one model that takes text: its Hugging Face tokenizer converted into OpenVINO operators by
openvino-tokenizers, in front of the static int8 student (model.int8.qdq.onnx), ending in probabilities.

Why openvino-tokenizers, for this one file that serving runs: on the first 2,000 IMDb test reviews at 256 tokens it
gave the Hugging Face tokenizer's ids for every review, takes a batch of strings in one call, and handles NUL
characters, byte-order marks and "İ" as Hugging Face does. onnxruntime-extensions matched only with
strip_accents=1 (95.55% of reviews by default), takes one or two strings per call (two are read as a sentence pair)
and differed on those three cases.

The model's input is `text` (strings, any batch size); its output `probabilities` is the softmax of the logits, or a
sigmoid per label for a multi-label student. Label names and decision thresholds stay in the config.json beside it,
which `TextClassifier` reads.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import models

TEXT_MODEL_FILE = "model.text.int8.xml"  # an OpenVINO IR
TEXT_MODEL_WEIGHTS = "model.text.int8.bin"  # its weights, which openvino.save_model writes beside it
TEXT_INPUT = "text"
PROBABILITIES = "probabilities"
TOKENIZER_INPUTS = ("input_ids", "attention_mask")
CHUNK_TEXTS = 4  # texts per model call (see TextClassifier.probabilities)
# OpenVINO's CPU plugin keeps the kernels it prepared for each input shape in a cache of this many entries (5,000 by
# default). A served text model meets every length up to max_length at every chunk size; at 5,000, the shapes of a
# load at concurrency 32 pushed out those of the warm-up. Served minilm student, concurrency 1 after a load at 32 and
# 8: p99/p50 2.39 and 75.6 answers/s at 5,000; 1.56 and 93.1 at 100,000, with the server's memory the same (2.4 GB).
RUNTIME_CACHE_ENTRIES = 100_000
MAX_LENGTH_INFO = ["kdflow", "max_length"]  # where the text model keeps its truncation length (runtime info)


def convert_tokenizer(tokenizer, max_length: int):
    """The Hugging Face (fast) `tokenizer` as an OpenVINO model from strings to input_ids and attention_mask,
    truncating to `max_length` tokens as data_prep does (openvino-tokenizers truncates only when asked)."""
    import openvino_tokenizers

    return openvino_tokenizers.convert_tokenizer(tokenizer, with_detokenizer=False, truncation=True,
                                                 max_length=max_length)


def build(tokenizer, student_onnx: Path, max_length: int, multi_label: bool):
    """The text model: `tokenizer` converted, feeding the student ONNX file, ending in probabilities."""
    import openvino
    import openvino.opset13 as ops

    tokenize = convert_tokenizer(tokenizer, max_length)
    classifier = openvino.Core().read_model(str(student_onnx))
    # Each token output (the producer behind its Result) replaces the classifier's input of that name.
    # openvino_tokenizers.connect_models does the same but fails on the tokenizer's third output (token_type_ids),
    # which kdflow's students do not take.
    produced = {output.get_any_name(): output.get_node().input_value(0) for output in tokenize.outputs}
    for parameter in classifier.get_parameters():
        for consumer in list(parameter.output(0).get_target_inputs()):
            consumer.replace_source_output(produced[parameter.output(0).get_any_name()])
    logits = classifier.output(0).get_node().input_value(0)
    probabilities = ops.sigmoid(logits) if multi_label else ops.softmax(logits, -1)
    probabilities.output(0).set_names({PROBABILITIES})
    text = tokenize.get_parameters()[0]
    text.output(0).set_names({TEXT_INPUT})
    # The tokenizer keeps its truncation length in a variable (openvino-tokenizers lets a caller change it); its
    # Assign must stay in the model or the CPU plugin refuses the ReadValue.
    model = openvino.Model([ops.result(probabilities)], tokenize.get_sinks(), [text], "text_classifier")
    model.set_rt_info(max_length, MAX_LENGTH_INFO)  # what TextClassifier.warm_up reads
    return model


def save(model, folder) -> None:
    import openvino

    openvino.save_model(model, str(Path(folder, TEXT_MODEL_FILE)))


def read_model(path: Path):
    """A saved text model; openvino_tokenizers is imported first: it registers the tokenizer operators."""
    import openvino
    import openvino_tokenizers  # noqa: F401

    return openvino.Core().read_model(str(path))


def compile_model(model_or_path, threads: int | None = None):
    """An OpenVINO model (or the path of one) compiled for the CPU, on `threads` threads (OpenVINO's choice when
    None). openvino_tokenizers is imported first: it registers the tokenizer operators the reader needs."""
    import openvino
    import openvino_tokenizers  # noqa: F401

    config = {"CPU_RUNTIME_CACHE_CAPACITY": RUNTIME_CACHE_ENTRIES}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return openvino.Core().compile_model(str(model_or_path) if isinstance(model_or_path, Path) else model_or_path,
                                         "CPU", config)


@dataclass(frozen=True)
class TokenAgreement:
    """How the converted tokenizer's ids compare with Hugging Face's, text by text."""

    rows: int
    differing_rows: list[int]

    @property
    def share_equal(self) -> float:
        return 1 - len(self.differing_rows) / self.rows if self.rows else 1.0


def token_agreement(tokenizer, texts: list[str], max_length: int, batch_size: int = 64) -> TokenAgreement:
    """Tokenizes `texts` with `tokenizer` and with its conversion, and lists the texts whose ids differ."""
    converted = compile_model(convert_tokenizer(tokenizer, max_length))
    differing = []
    for start in range(0, len(texts), batch_size):
        batch = texts[start:start + batch_size]
        outputs = converted(batch)
        ids, mask = (outputs[converted.output(name)] for name in TOKENIZER_INPUTS)
        expected = tokenizer(batch, truncation=True, max_length=max_length)["input_ids"]
        differing += [start + row for row, want in enumerate(expected) if ids[row][mask[row] == 1].tolist() != want]
    return TokenAgreement(rows=len(texts), differing_rows=differing)


@dataclass(frozen=True)
class Answer:
    """What the model says of one text: the label (single-label) or labels (multi-label) and every probability."""

    labels: list[str]
    probabilities: dict[str, float]


class Labelled:
    """What turns one row of probabilities per text into answers: the label names (`label_names`) and, for a
    multi-label model, the decision thresholds (`thresholds`, else None)."""

    label_names: list[str]
    thresholds: list[float] | None

    @property
    def multi_label(self) -> bool:
        return self.thresholds is not None

    def decisions(self, probabilities: np.ndarray) -> np.ndarray:
        """The class id per row (single-label), or a 0/1 row per text at the decision thresholds (multi-label)."""
        if self.multi_label:  # above the threshold, as metrics.multi_label_predictions decides
            return (probabilities > np.asarray(self.thresholds)).astype(np.int64)
        return probabilities.argmax(axis=1)

    def answers(self, probabilities: np.ndarray) -> list[Answer]:
        decisions = self.decisions(probabilities)
        return [Answer(labels=[name for name, chosen in zip(self.label_names, decision) if chosen]
                       if self.multi_label else [self.label_names[decision]],
                       probabilities={name: float(value) for name, value in zip(self.label_names, row)})
                for decision, row in zip(decisions, probabilities)]


class TextClassifier(Labelled):
    """The text model of a folder (an onnx_export output or a published version) with its config.json: texts in,
    answers out."""

    def __init__(self, folder, threads: int | None = None):
        from transformers import AutoConfig

        graph = Path(folder, TEXT_MODEL_FILE)
        if not graph.exists():
            raise FileNotFoundError(f"{folder} holds no text model ({TEXT_MODEL_FILE})")
        config = AutoConfig.from_pretrained(str(folder))
        self.label_names = [config.id2label[index] for index in range(config.num_labels)]
        self.thresholds = models.decision_thresholds(config)
        model = read_model(graph)
        # The truncation length; None in text models written before kdflow recorded it.
        self.max_length = int(model.get_rt_info(MAX_LENGTH_INFO).astype(int)) if model.has_rt_info(
            MAX_LENGTH_INFO) else None
        self.compiled = compile_model(model, threads)

    def warm_up(self) -> int:
        """Answers one text of every length up to the truncation length; returns how many it ran (none for a text
        model written before kdflow recorded that length).

        OpenVINO prepares its kernels for each new input shape on first sight: on the minilm student at batch 1,
        over 400 IMDb reviews never seen, p99 latency was 3.2x p50 cold and 1.3x after this warm-up (5 s).
        """
        if self.max_length is None:
            return 0
        texts = warm_up_texts(self.max_length)
        for text in texts:
            self.probabilities([text])
        return len(texts)

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """One row of probabilities per text (float32, one column per label)."""
        if not texts:
            return np.zeros((0, len(self.label_names)), dtype=np.float32)
        # Texts of like length share a model call, which pads them to its longest. In process, 32 IMDb reviews a call:
        # a DistilBERT-base-shaped student answered 25.8 reviews/s in one call, 32.5 in sorted chunks of 8, 36.7 of 4;
        # the minilm student 131, 151 and 151.
        order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
        rows = np.zeros((len(texts), len(self.label_names)), dtype=np.float32)
        # One infer request per call: the compiled model's own call shares one request and is not thread-safe.
        request = self.compiled.create_infer_request()
        for start in range(0, len(order), CHUNK_TEXTS):
            chunk = order[start:start + CHUNK_TEXTS]
            rows[chunk] = request.infer({TEXT_INPUT: [texts[index] for index in chunk]})[PROBABILITIES]
        return rows


def warm_up_texts(max_length: int) -> list[str]:
    """Texts of every token length up to `max_length`: a word and its space are one token in the common
    vocabularies, beside the special tokens."""
    return [" ".join(["good"] * words) for words in range(max_length)]
