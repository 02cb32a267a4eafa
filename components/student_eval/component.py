"""KFP definition of the student_eval step; the work is in task.py."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from kdflow.components.common.command import TaskCommand
from kdflow.components.common.images import RUNTIME_IMAGE

# The step as `python -m kdflow.components.student_eval.task`: see kdflow.components.common.command.
COMMAND = TaskCommand(renamed={"student_metrics": "--metrics"}, not_written=("student_confusion", "retention"))


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def student_eval(
    data: Input[Dataset],
    student: Input[Model],
    teacher_metrics: Input[Metrics],
    student_metrics: Output[Metrics],
    student_confusion: Output[ClassificationMetrics],
    min_retention: float = 0.97,
) -> NamedTuple("GateOutputs", passed=bool, retention=float):
    """Evaluates the student on the test split and gates it on how much of the teacher's accuracy it keeps.

    Args:
        data: Tokenized splits from data_prep.
        student: The distilled student from distill.
        teacher_metrics: The teacher's test metrics from teacher_eval.
        min_retention: Least student accuracy / teacher accuracy for the gate to pass.

    Returns:
        student_metrics: Test accuracy, macro F1, confusion matrix, retention and the gate decision (also JSON).
        student_confusion: The test confusion matrix, drawn by the KFP UI.
        passed: True when retention >= min_retention.
        retention: Student accuracy / teacher accuracy on the test split.
    """
    from collections import namedtuple

    from kdflow.components.common.metrics import write_confusion_matrix, write_metrics
    from kdflow.components.student_eval import task

    metrics = task.run(data_dir=data.path, student_dir=student.path, teacher_metrics_path=teacher_metrics.path,
                       min_retention=min_retention)
    write_metrics(student_metrics, metrics)
    write_confusion_matrix(student_confusion, metrics["confusion_matrix"], metrics["label_names"])
    return namedtuple("GateOutputs", ["passed", "retention"])(metrics["passed"], metrics["retention"])
