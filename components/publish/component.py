"""KFP definition of the publish step; the work is in task.py."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Input, Markdown, Metrics, Model, Output

from kdflow.components.common.command import TaskCommand
from kdflow.components.common.images import RUNTIME_IMAGE

# The step as `python -m kdflow.components.publish.task`: see kdflow.components.common.command.
COMMAND = TaskCommand(
    renamed={"onnx_model": "--onnx", "publish_report": "--report", "model_version": "--version"},
    not_written=("promoted", "version_uri"),
)


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def publish(
    student: Input[Model],
    onnx_model: Input[Model],
    teacher_metrics: Input[Metrics],
    student_metrics: Input[Metrics],
    publish_report: Output[Markdown],
    publish_uri: str,
    model_name: str,
    model_version: str = "",
    promotion_tolerance: float = 0.0,
    run_id: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
) -> NamedTuple("PublishOutputs", promoted=bool, version_uri=str):
    """Uploads the student and promotes it to latest.json when it is at least as accurate as the champion.

    Args:
        student: The distilled student (save_pretrained folder) from distill.
        onnx_model: The ONNX export folder from onnx_export.
        teacher_metrics: The teacher's test metrics from teacher_eval.
        student_metrics: The student's test metrics and gate from student_eval.
        publish_uri: Destination: gs://bucket/prefix or a folder; the model goes to PUBLISH_URI/MODEL_NAME/VERSION/.
        model_name: Name of the published model (letters, digits, '.', '_', '-').
        model_version: Version folder name; empty takes the pipeline run's id.
        promotion_tolerance: Accuracy the challenger may lose against the champion and still be promoted.
        run_id: The pipeline run's id (filled in by KFP).

    Returns:
        publish_report: The decision, with the challenger's and the champion's figures, as Markdown.
        promoted: True when latest.json now points at this version.
        version_uri: Where this version is (or would have been) published.
    """
    from collections import namedtuple

    from kdflow.components.common.summary import build_summary
    from kdflow.components.publish import task

    summary = build_summary(teacher_metrics_path=teacher_metrics.path, student_metrics_path=student_metrics.path,
                            onnx_dir=onnx_model.path, student_dir=student.path)
    decision = task.run(student_dir=student.path, onnx_dir=onnx_model.path, summary=summary, publish_uri=publish_uri,
                        model_name=model_name, version=model_version or run_id, report_path=publish_report.path,
                        promotion_tolerance=promotion_tolerance)
    return namedtuple("PublishOutputs", ["promoted", "version_uri"])(decision["promoted"], decision["version_uri"])
