"""The onnx_export step: the student as fp32 and int8 ONNX, checked against PyTorch, with accuracy and latency.

Three files, for two runtimes:
- model.onnx (fp32) and model.int8.onnx (dynamic int8) are made for ONNX Runtime: its transformer optimizer fuses
  attention, layer norms and GELU into its own operators (com.microsoft domain) as far as the student's family
  allows (FUSED_FAMILIES: all of them for BERT, DistilBERT and ELECTRA, layer norms and GELU only for DeBERTa and
  ModernBERT), and the int8 file is quantized from that graph;
- model.int8.qdq.onnx keeps standard ONNX operators, with its embedding tables and linear layers in int8
  (QuantizeLinear and DequantizeLinear, calibrated on training rows), for runtimes that compile such graphs into
  their own kernels: it is measured with OpenVINO, which on Intel CPUs with AMX serves it several times faster
  than ONNX Runtime serves model.int8.onnx (README, Performance). NNCF makes it, at most `max_int8_drop` below the
  fp32 model in validation accuracy at every inference precision of the CPU it is made on (int8.py).

A fourth model, model.text.int8.xml (.bin), is the static int8 student with its tokenizer in the graph, for
serving: strings in, probabilities out (kdflow.components.common.text_model). The report records how its token ids
and decisions compare with the Hugging Face tokenizer's and the int8 model's on the test rows.

Run as a KFP component (component.py) or directly, with every setting of settings.py given (`--help` lists them;
their defaults are the pipeline's parameters):

    python -m kdflow.components.onnx_export.task --data DATA_DIR --student STUDENT_DIR --onnx-model ONNX_DIR \
        --onnx-metrics onnx_metrics.json --parity-tolerance 1e-4 --max-eval-samples 0 --max-int8-drop 0.01

The output folder holds the three files, the tokenizer, config.json and onnx_report.json (an OnnxReport of
kdflow.components.common.results). It is filled only once the fp32 ONNX model matches PyTorch within the parity
tolerance: a failed check leaves it as it was.
"""

import shutil
import sys
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from kdflow.components.common import models, step, text_model
from kdflow.components.common.data import LABEL, MODEL_INPUTS, TEXT, load_prepared, split_for_tokenizer
from kdflow.components.common.errors import KdflowInputError, first_line
from kdflow.components.common.inference import (
    LATENCY_BATCH_SIZES, batches_in_order, latencies_ms, predict, torch_runner,
)
from kdflow.components.common.metrics import decisions, scores_of, scores_of_decisions
from kdflow.components.common.results import (
    EXPORT_KINDS, EXPORTS, ONNX_REPORT, ONNX_RUNTIME, OPENVINO, PARITY_KIND, PYTORCH_KEY, ExportScores, Int8Bound,
    OnnxReport, TextModelCheck,
)
from kdflow.components.common.storage import move_into

from .int8 import LabelledBatches, accuracy, quantize_bounded
from .settings import Files, Result, Settings  # noqa: F401 (Result: the step's interface)

FP32_FILE = EXPORTS["fp32"].file
INT8_FILE = EXPORTS["int8"].file
QDQ_INT8_FILE = EXPORTS["int8_qdq"].file
TEXT_MODEL_KIND = "int8_qdq"  # the export the text model puts its tokenizer in front of: the fastest on OpenVINO
OPSET_VERSION = 17
OUTPUT_NAME = "logits"

# The parity check runs on the first test rows in their own order, so each batch mixes lengths and pads.
PARITY_ROWS = 64
PARITY_BATCH_SIZE = 16
EVAL_BATCH_SIZE = 32
# The encoder families (config.model_type) whose export ONNX Runtime's "bert" optimizer was checked on: it is its
# optimizer for encoders (optimizer.MODEL_TYPES has no RoBERTa, DeBERTa or ModernBERT of its own), fuses each
# family's subgraphs that match BERT's and leaves the rest as they are; the fused 2-layer students of
# tests/test_families.py stay within 4.8e-7 of PyTorch. Measured on them: distilbert (a BERT teacher's student), bert
# and electra fuse fully (Attention, SkipLayerNormalization, EmbedLayerNormalization, BiasGelu); roberta all but
# EmbedLayerNormalization (its positions count from the pad id); deberta-v2 layer norms and GELU only (no fused
# operator computes its disentangled attention); modernbert layer norms and GELU only (rotary, sliding-window
# attention and its gated MLP stay as exported).
FUSED_FAMILIES = frozenset({"bert", "distilbert", "roberta", "electra", "deberta-v2", "modernbert"})
# Static quantization reads the ranges of the activations from the first training rows, and bounds its accuracy
# drop on the first validation rows (IMDb's 2% validation split is 500 rows).
CALIBRATION_ROWS = 64
CALIBRATION_BATCH_SIZE = 8
VALIDATION_ROWS = 500


class ParityError(RuntimeError):
    """The exported model's outputs differ from PyTorch's by more than the tolerance."""


def run(settings: Settings, files: Files) -> None:
    """Exports the student to ONNX (fp32, dynamic int8, static QDQ int8) and measures each against PyTorch.

    The student is a `save_pretrained` folder of a sequence classifier with its tokenizer. The data's test split is
    what parity, accuracy and latency (at LATENCY_BATCH_SIZES) are measured on, its first training rows calibrate
    the static int8 model and its first validation rows bound that model's accuracy drop. The ONNX files,
    tokenizer, config.json and onnx_report.json go to the onnx_model folder (absent or empty); the report also to
    onnx_metrics, whose numbers the KFP UI shows.

    Raises:
        KdflowInputError: A bad folder, or no test or validation rows, before any export.
        ParityError: The fp32 export differs from PyTorch by more than `parity_tolerance`.
    """
    import torch
    from transformers import AutoTokenizer

    check_folders(files.student, files.onnx_model)
    data = load_prepared(files.data)
    tokenizer = AutoTokenizer.from_pretrained(files.student)
    test = student_test_split(data, tokenizer, settings.max_eval_samples)
    if not len(test):
        raise KdflowInputError(f"The test split of {files.data} is empty: prepare the data with test rows.")
    validation_split = split_for_tokenizer(data, "validation", tokenizer)
    if not len(validation_split):
        raise KdflowInputError(f"The validation split of {files.data} is empty: the int8 model's accuracy drop is "
                               "bounded on it; prepare the data with a larger validation_fraction.")
    train = split_for_tokenizer(data, "train", tokenizer)
    calibration_split = train.select(range(min(CALIBRATION_ROWS, len(train))))
    calibration = batches_in_order(calibration_split, tokenizer, CALIBRATION_BATCH_SIZE)
    model = load_for_export(files.student)
    thresholds = models.decision_thresholds(model.config)  # a multi-label student's, chosen when it trained
    validation = labelled_batches(validation_split.select(range(min(VALIDATION_ROWS, len(validation_split)))),
                                  tokenizer, thresholds)
    pytorch = torch_runner(model)

    output = Path(files.onnx_model)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{output.name}-", dir=output.parent) as scratch:
        scratch = Path(scratch)
        int8_bound = write_onnx_models(model, scratch, calibration, validation, settings.max_int8_drop)
        fp32 = export_runner(EXPORTS[PARITY_KIND], scratch)
        parity = test.select(range(min(PARITY_ROWS, len(test))))
        reference = parity_logits(pytorch, parity, tokenizer)
        max_abs_diff = largest_difference(parity_logits(fp32, parity, tokenizer), reference)
        if not max_abs_diff <= settings.parity_tolerance:
            raise ParityError(
                f"The ONNX export differs from PyTorch by up to {max_abs_diff:.3g} in a logit, more than "
                f"parity_tolerance={settings.parity_tolerance:g}: nothing was written; check the model's export or "
                "raise the tolerance."
            )

        runners = {PYTORCH_KEY: pytorch, **{kind.key: fp32 if kind.name == PARITY_KIND else export_runner(kind, scratch)
                                            for kind in EXPORT_KINDS}}
        logits = {name: predict(runner, test, tokenizer, EVAL_BATCH_SIZE) for name, runner in runners.items()}
        scores = {name: scores_of(logits[name], test[LABEL], data.num_labels, thresholds) for name in runners}
        differences = {kind.name: max_abs_diff if kind.name == PARITY_KIND else largest_difference(
            parity_logits(runners[kind.key], parity, tokenizer), reference) for kind in EXPORT_KINDS}
        latencies = {name: latencies_ms(runner, test, tokenizer, LATENCY_BATCH_SIZES)
                     for name, runner in runners.items()}
        test_batches = labelled_batches(test, tokenizer, thresholds)
        int8_test_accuracy = {precision: accuracy(scratch / QDQ_INT8_FILE, test_batches, precision)
                              for precision in int8_bound.precisions}
        int8_bound = replace(int8_bound, test_accuracy=int8_test_accuracy)
        shutil.copy(Path(files.student, "config.json"), scratch / "config.json")  # the text model's labels
        text_check, text_error = write_text_model(
            scratch, tokenizer, data, test, decisions(logits[EXPORTS[TEXT_MODEL_KIND].key], thresholds))
        report = OnnxReport(
            exports={kind.name: ExportScores(
                accuracy=scores[kind.key]["accuracy"], macro_f1=scores[kind.key]["macro_f1"],
                confusion_matrix=scores[kind.key]["confusion_matrix"], max_abs_diff=differences[kind.name],
                latency_ms=latencies[kind.key], size_mb=(scratch / kind.file).stat().st_size / 1e6,
            ) for kind in EXPORT_KINDS},
            pytorch_accuracy=scores[PYTORCH_KEY]["accuracy"], pytorch_latency_ms=latencies[PYTORCH_KEY],
            parity_tolerance=settings.parity_tolerance, parity_rows=len(parity), rows=len(test),
            calibration_rows=len(calibration_split), threads=torch.get_num_threads(), opset_version=OPSET_VERSION,
            text_model=text_check, text_model_error=text_error, int8_bound=int8_bound,
        )
        tokenizer.save_pretrained(str(scratch))
        report.write(scratch / ONNX_REPORT)
        move_into(scratch, output, last=ONNX_REPORT)
    report.write(files.onnx_metrics)  # the same report: the KFP UI shows its numbers, named by their path


def write_text_model(folder: Path, tokenizer, data, test, reference: np.ndarray):
    """Writes the text model (kdflow.components.common.text_model) over the static int8 file in `folder`, and checks
    it on the test rows against the Hugging Face tokenizer and the int8 model's decisions on its ids (`reference`).

    Returns its check, or None and why it could not be made: openvino-tokenizers converts the fast tokenizers of the
    common families, not every tokenizer there is, and the ONNX files are of use without it.
    """
    import torch

    try:
        student = folder / EXPORTS[TEXT_MODEL_KIND].file
        text_model.save(text_model.build(tokenizer, student, data.max_length, data.multi_label), folder)
    except Exception as error:  # noqa: BLE001 (the converter's errors are of many kinds; each is reported)
        warnings.warn(f"No text model was written: {first_line(error)}", stacklevel=2)
        return None, f"openvino-tokenizers could not convert the tokenizer: {first_line(error)}"
    classifier = text_model.TextClassifier(folder, threads=torch.get_num_threads())
    texts = test[TEXT]
    decided = classifier.decisions(np.concatenate([classifier.probabilities(texts[start:start + EVAL_BATCH_SIZE])
                                                   for start in range(0, len(texts), EVAL_BATCH_SIZE)]))
    scores = scores_of_decisions(decided, test[LABEL], data.num_labels)
    agreement = text_model.token_agreement(tokenizer, texts, data.max_length)
    same_decision = (decided == reference).reshape(len(texts), -1).all(axis=1)
    return TextModelCheck(
        file=text_model.TEXT_MODEL_FILE, rows=len(texts), token_ids_equal=agreement.share_equal,
        differing_rows=agreement.differing_rows, decisions_equal=float(same_decision.mean()),
        accuracy=scores["accuracy"], macro_f1=scores["macro_f1"]), None


def check_folders(student_dir: str, output_dir: str) -> None:
    if not Path(student_dir, "config.json").exists():
        raise KdflowInputError(
            f"{student_dir} holds no saved model (config.json): give the distill step's output folder.")
    if Path(output_dir).exists() and any(Path(output_dir).iterdir()):
        raise KdflowInputError(f"The output folder {output_dir} is not empty: give a new or empty folder.")


def student_test_split(data, tokenizer, max_eval_samples: int):
    """The test rows to measure, as the student's tokenizer encodes them."""
    test = split_for_tokenizer(data, "test", tokenizer)
    return test.select(range(min(max_eval_samples, len(test)))) if max_eval_samples else test


def load_for_export(model_dir: str):
    """The fp32 model of a folder, with eager attention: it exports as plain matrix products that ONNX Runtime's
    optimizer can fuse, where SDPA's cannot be."""
    import torch
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(
        model_dir, attn_implementation="eager", dtype=torch.float32).eval()


def write_onnx_models(model, folder: Path, calibration: list[dict], validation: LabelledBatches,
                      max_int8_drop: float) -> Int8Bound:
    """Writes the three ONNX files of `model` (EXPORT_KINDS) into `folder`; `calibration` is a list of input batches,
    `validation` what the static int8 file's accuracy drop is bounded on. Returns how that bound held."""
    with tempfile.TemporaryDirectory() as plain_folder:
        plain = Path(plain_folder, "plain.onnx")
        export_onnx(model, plain)
        int8_bound = quantize_bounded(plain, folder / QDQ_INT8_FILE, calibration, validation, max_int8_drop)
        optimize_for_onnxruntime(plain, folder / FP32_FILE, model.config)
    quantize_int8(folder / FP32_FILE, folder / INT8_FILE)
    return int8_bound


def labelled_batches(split, tokenizer, thresholds: list[float] | None) -> LabelledBatches:
    """The rows of a tokenized split in order, in batches of EVAL_BATCH_SIZE, with their labels."""
    labels = np.asarray(split[LABEL])
    starts = range(0, len(split), EVAL_BATCH_SIZE)
    return LabelledBatches(batches=batches_in_order(split, tokenizer, EVAL_BATCH_SIZE),
                           labels=[labels[start:start + EVAL_BATCH_SIZE] for start in starts], thresholds=thresholds)


def export_onnx(model, path: Path) -> None:
    """Exports `model` to fp32 ONNX in standard operators, inputs input_ids and attention_mask, output logits, any
    batch size and length."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    # export() restores the wrapper's training flag afterwards, and with it the model's: keep both in eval mode.
    wrapper = LogitsOnly(model).eval()
    # A padded example, so the traced graph is the one that applies the attention mask.
    input_ids = torch.zeros((2, 8), dtype=torch.int64)
    attention_mask = torch.ones((2, 8), dtype=torch.int64)
    attention_mask[1, 5:] = 0
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in MODEL_INPUTS}
    with warnings.catch_warnings():
        # Expected notes of the legacy exporter, chosen on purpose (ONNX Runtime fuses attention only in its
        # graphs); the parity check is what guards the trace and the mask indexing, whose indices are positions.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        # DeBERTa-v2 makes its attention scale with torch.tensor(head size): a constant in the trace, as it should be.
        warnings.filterwarnings("ignore", message="To copy construct from a tensor")
        torch.onnx.export(
            wrapper, (input_ids, attention_mask), str(path), input_names=MODEL_INPUTS, output_names=[OUTPUT_NAME],
            dynamic_axes={**dynamic_axes, OUTPUT_NAME: {0: "batch"}}, opset_version=OPSET_VERSION, dynamo=False,
        )


def optimize_for_onnxruntime(source: Path, destination: Path, config) -> None:
    """Writes the ONNX file `source` to `destination` with ONNX Runtime's transformer fusions for the model's family
    (FUSED_FAMILIES: which fuse what). A family not among them is written as it is, unfused: its graph is
    correct and runs everywhere, only slower, where a fusion never tried on it could change its outputs."""
    if config.model_type not in FUSED_FAMILIES:
        shutil.copy(source, destination)
        return
    from onnxruntime.transformers import optimizer

    optimized = optimizer.optimize_model(str(source), model_type="bert", num_heads=config.num_attention_heads,
                                         hidden_size=config.hidden_size)
    optimized.save_model_to_file(str(destination))


def quantize_int8(source: Path, destination: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel weights keep the outputs much closer to fp32 (cosine 0.992 vs 0.964 per tensor on MiniLM). ONNX
    # shape inference does not type the outputs of ONNX Runtime's fused operators: they are float.
    quantize_dynamic(str(source), str(destination), weight_type=QuantType.QInt8, per_channel=True,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def ort_runner(path: Path):
    """The same kind of function as `torch_runner`, with ONNX Runtime on the CPU and as many threads as PyTorch."""
    import onnxruntime
    import torch

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda batch: session.run([OUTPUT_NAME], batch)[0]


def openvino_runner(path: Path):
    """The same kind of function with OpenVINO on the CPU, as many threads as PyTorch, and OpenVINO's own choice
    of precision for what is not int8: bf16 on CPUs with AMX, else fp32."""
    import openvino
    import torch

    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": torch.get_num_threads()})
    request = compiled.create_infer_request()
    # The request reuses its output buffer: copy before the next batch.
    return lambda batch: request.infer(batch)[compiled.output(OUTPUT_NAME)].copy()


# The runner of each runtime an export is made for (ExportKind.runtime).
RUNNERS = {ONNX_RUNTIME: ort_runner, OPENVINO: openvino_runner}


def export_runner(kind, folder: Path):
    """A runner of the export `kind` (an ExportKind) in `folder`, on the runtime it is made for."""
    return RUNNERS[kind.runtime](Path(folder) / kind.file)


def parity_logits(runner, rows, tokenizer) -> np.ndarray:
    return predict(runner, rows, tokenizer, PARITY_BATCH_SIZE, by_length=False)


def largest_difference(logits, reference) -> float:
    return float(np.abs(logits - reference).max())


def main(argv: list[str] | None = None) -> None:
    step.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
