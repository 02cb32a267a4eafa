"""KFP definition of the report step; the work is in task.py."""

from kfp import dsl
from kfp.dsl import HTML, Input, Metrics, Model, Output

from kdflow.components.common.command import TaskCommand
from kdflow.components.common.images import RUNTIME_IMAGE

# The step as `python -m kdflow.components.report.task`: see kdflow.components.common.command.
COMMAND = TaskCommand(renamed={"onnx_model": "--onnx", "quality_report": "--report"}, not_written=("Output",))


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def report(
    teacher_metrics: Input[Metrics],
    student_metrics: Input[Metrics],
    student: Input[Model],
    onnx_model: Input[Model],
    quality_report: Output[HTML],
    baseline_metrics: Input[Metrics] = None,
) -> str:
    """Summarises the run and writes the quality report.

    Args:
        teacher_metrics: The teacher's test metrics, size and latency from teacher_eval.
        student_metrics: The distilled student's test metrics, size, latency and gate from student_eval.
        student: The distilled student from distill (its training log gives the loss curves).
        onnx_model: The ONNX export folder from onnx_export, with its report.
        baseline_metrics: The hard-label baseline's test metrics from student_eval; absent when it was not trained.

    Returns:
        quality_report: Accuracy, macro F1, parameters, size and latency of every model, the distillation losses and
            the confusion matrices, as a self-contained HTML page.
        Output: The run's summary as JSON (the CLI's summary.json), with the quality report's URI under "report".
    """
    import json

    from kdflow.components.report import task

    summary = task.run(
        teacher_metrics_path=teacher_metrics.path, student_metrics_path=student_metrics.path, student_dir=student.path,
        onnx_dir=onnx_model.path, report_path=quality_report.path,
        baseline_metrics_path=baseline_metrics.path if baseline_metrics else None,
    )
    return json.dumps({**summary, "report": quality_report.uri})
