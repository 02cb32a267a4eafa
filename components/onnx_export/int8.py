"""The static int8 file, model.int8.qdq.onnx, with its accuracy drop bounded where it is made.

NNCF's accuracy-controlled quantization (`nncf.quantize_with_accuracy_control`, on its ONNX backend) quantizes the
embedding tables and the linear layers (QuantizeLinear and DequantizeLinear, calibrated on training rows), measures
the fp32 and the int8 graph on the validation rows, and while the int8 one is more than `max_drop` below, returns the
layer whose quantization costs the most accuracy (ranked on a few validation batches) to float, and measures again.

Accuracy is measured on OpenVINO, the runtime the file is made for, at every inference precision this CPU offers it:
f32, and bf16 or f16 where the CPU computes them. The worst of them counts, as OpenVINO may run what is not int8 in
bf16 on a CPU with bf16 kernels (its default on AMX): on an AMD EPYC with AVX512-BF16, ONNX Runtime's static QDQ
quantization of the minilm student measured 1.5 points below fp32 on OpenVINO, against 0.25 on this project's AVX512
CPU without bf16 (issue 22). The step's report measures the file on the test rows at the same precisions
(`Int8Bound.test_accuracy`); `kdflow bench int8` on CPUs without VNNI.
"""

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdflow.components.common.metrics import decisions
from kdflow.components.common.results import Int8Bound

# OpenVINO's names of the inference precisions (INFERENCE_PRECISION_HINT), by the CPU capability that offers each.
PRECISIONS = {"FP32": "f32", "BF16": "bf16", "FP16": "f16"}
# NNCF ranks the layers to return to float on at most this many validation batches; each later step is one
# validation of the whole set.
RANKING_BATCHES = 8


@dataclass(frozen=True)
class LabelledBatches:
    """Validation rows as model inputs (padded batches, in row order) with their labels, and how to decide on them."""

    batches: list[dict]
    labels: list[np.ndarray]  # per batch: class ids, or rows of 0/1 per label
    thresholds: list[float] | None  # a multi-label model's, else None

    @property
    def rows(self) -> int:
        return sum(len(labels) for labels in self.labels)


def inference_precisions() -> list[str]:
    """The inference precisions OpenVINO may run a model at on this CPU: f32, and those the CPU has kernels for."""
    import openvino

    capabilities = openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return [precision for capability, precision in PRECISIONS.items() if capability in capabilities]


def accuracy(model, validation: LabelledBatches, precision: str | None) -> float:
    """The accuracy of an ONNX model (a ModelProto or a file) on `validation`, run by OpenVINO at `precision`
    (None: its default on this CPU)."""
    return scored(model, list(zip(validation.batches, validation.labels)), validation, precision)[0]


def scored(model, items: list[tuple[dict, np.ndarray]], validation: LabelledBatches,
           precision: str | None) -> tuple[float, list[float]]:
    """The accuracy of an ONNX model on (batch, labels) items, and each item's, run by OpenVINO at `precision`."""
    import onnx
    import openvino

    core = openvino.Core()
    source = io.BytesIO(model.SerializeToString()) if isinstance(model, onnx.ModelProto) else str(model)
    config = {"INFERENCE_PRECISION_HINT": precision} if precision else {}
    compiled = core.compile_model(core.read_model(source), "CPU", config)
    request = compiled.create_infer_request()
    decided = [decisions(request.infer(batch)[compiled.output(0)], validation.thresholds) for batch, _ in items]
    right = [(batch_decisions == labels).reshape(len(labels), -1).all(axis=1)  # every label of a row right
             for batch_decisions, (_, labels) in zip(decided, items)]
    return float(np.concatenate(right).mean()), [float(item.mean()) for item in right]


def worst_scored(model, items, validation: LabelledBatches, precisions: list[str]) -> tuple[float, list[float]]:
    """`scored` at the precision where the model scores lowest: the validation function given to NNCF, whose
    per-item figures spare it a model compilation per item."""
    return min((scored(model, list(items), validation, precision) for precision in precisions),
               key=lambda result: result[0])


def quantize_bounded(source: Path, destination: Path, calibration: list[dict], validation: LabelledBatches,
                     max_drop: float, precisions: list[str] | None = None) -> Int8Bound:
    """Writes the static int8 QDQ model of the fp32 ONNX file `source` to `destination`, at most `max_drop` below it
    in validation accuracy on every inference precision of this CPU (the module's docstring; `precisions` measures
    those named instead), and says how it held.

    The attention's own matrix products (of two activations) stay in float: OpenVINO runs them in its fused
    attention kernel. `calibration` is a list of input batches.
    """
    import nncf
    import onnx

    model = onnx.load(str(source))
    precisions = precisions or inference_precisions()
    weights = {initializer.name for initializer in model.graph.initializer}
    products_of_activations = [node.name for node in model.graph.node
                               if node.op_type == "MatMul" and node.input[1] not in weights]
    nncf.set_log_level(logging.WARNING)  # its per-layer notes; the report says what came of them
    # Without SmoothQuant: a layer returned to float gets its original weight back but keeps SmoothQuant's scaling
    # of its input, which left a tiny student at chance (tests/test_onnx_export.py, the int8 bound).
    no_smooth_quant = nncf.AdvancedQuantizationParameters(
        smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(matmul=-1))
    quantized = nncf.quantize_with_accuracy_control(
        model, nncf.Dataset(calibration),
        nncf.Dataset(list(zip(validation.batches, validation.labels)), lambda item: item[0]),
        lambda candidate, items: worst_scored(candidate, items, validation, precisions),
        max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calibration),
        model_type=nncf.ModelType.TRANSFORMER, ignored_scope=nncf.IgnoredScope(names=products_of_activations),
        advanced_quantization_parameters=no_smooth_quant,
        advanced_accuracy_restorer_parameters=nncf.AdvancedAccuracyRestorerParameters(
            ranking_subset_size=min(RANKING_BATCHES, len(validation.batches))),
    )
    onnx.save(quantized, str(destination))
    int8_layers = quantized_layers(quantized.graph)
    return Int8Bound(
        max_drop=max_drop, rows=validation.rows, precisions=precisions,
        fp32_accuracy=min(accuracy(model, validation, precision) for precision in precisions),
        int8_accuracy=min(accuracy(quantized, validation, precision) for precision in precisions),
        int8_layers=len(int8_layers),
        float_layers=[name for name in layers_with_weights(model.graph) if name not in int8_layers],
    )


def layers_with_weights(graph) -> list[str]:
    """The graph's embedding tables (Gather from a weight) and linear layers (MatMul or Gemm by a weight)."""
    weights = {initializer.name for initializer in graph.initializer}
    return [node.name for node in graph.node
            if (node.op_type in ("MatMul", "Gemm") and node.input[1] in weights)
            or (node.op_type == "Gather" and node.input[0] in weights)]


def quantized_layers(graph) -> set[str]:
    """The layers of a QDQ graph whose weight is int8: one of their inputs is a DequantizeLinear of a weight."""
    weights = {initializer.name for initializer in graph.initializer}
    dequantized_weights = {output for node in graph.node if node.op_type == "DequantizeLinear"
                           and node.input[0] in weights for output in node.output}
    return {node.name for node in graph.node if node.op_type in ("MatMul", "Gemm", "Gather")
            and any(name in dequantized_weights for name in node.input)}
