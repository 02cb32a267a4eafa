"""KFP definition of the onnx_export step; the work is in task.py."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from kdflow.components.common.command import TaskCommand
from kdflow.components.common.images import RUNTIME_IMAGE

# The step as `python -m kdflow.components.onnx_export.task`: see kdflow.components.common.command.
COMMAND = TaskCommand(renamed={"onnx_model": "--output"}, not_written=("onnx_metrics",))


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def onnx_export(
    data: Input[Dataset],
    student: Input[Model],
    onnx_model: Output[Model],
    onnx_metrics: Output[Metrics],
    parity_tolerance: float = 1e-4,
    max_eval_samples: int = 0,
):
    """Exports the student to ONNX in fp32 and int8, checks it against PyTorch and measures accuracy and latency.

    Args:
        data: Tokenized splits from data_prep; the test split is what the checks run on, the first training rows
            calibrate the static int8 model.
        student: The distilled student from distill, with its tokenizer.
        parity_tolerance: Largest logit difference allowed between ONNX Runtime fp32 and PyTorch; more fails the step.
        max_eval_samples: Test rows to measure accuracy on; 0 takes them all.

    Returns:
        onnx_model: model.onnx (fp32) and model.int8.onnx (dynamic int8) for ONNX Runtime, model.int8.qdq.onnx (static
            int8, standard operators) for OpenVINO, tokenizer, config.json and onnx_report.json.
        onnx_metrics: Parity, accuracy and median latency of PyTorch and of each ONNX file on its runtime, file
            sizes (also JSON).
    """
    from kdflow.components.common.metrics import write_metrics
    from kdflow.components.onnx_export import task

    report = task.run(student_dir=student.path, data_dir=data.path, output_dir=onnx_model.path,
                      parity_tolerance=parity_tolerance, max_eval_samples=max_eval_samples)
    figures = {name: report[name] for name in (
        "max_abs_diff", "int8_max_abs_diff", "int8_qdq_max_abs_diff", "pytorch_accuracy", "fp32_accuracy",
        "int8_accuracy", "int8_qdq_accuracy", "rows")}
    for runtime, by_batch_size in report["latency_ms"].items():
        for batch_size, milliseconds in by_batch_size.items():
            figures[f"{runtime}_latency_ms_b{batch_size}"] = milliseconds
    for model_file, megabytes in report["size_mb"].items():
        figures[f"{model_file}_size_mb"] = megabytes
    write_metrics(onnx_metrics, figures)
