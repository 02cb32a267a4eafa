"""KFP definition of the student_eval step; its setting is declared in settings.py, the work is in task.py."""

from typing import NamedTuple

from kfp.dsl import ClassificationMetrics, Dataset, Input, Metrics, Model, Output

from kdflow.components.common.component import step_component
from kdflow.components.common.images import RUNTIME_IMAGE
from kdflow.components.student_eval import settings


@step_component(settings, base_image=RUNTIME_IMAGE)
def student_eval(
    data: Input[Dataset],
    student: Input[Model],
    teacher_metrics: Input[Metrics],
    student_metrics: Output[Metrics],
    student_confusion: Output[ClassificationMetrics],
    min_retention: float,
    min_accuracy_margin: float,
) -> NamedTuple("GateOutputs", passed=bool, retention=float):
    """Evaluates the student on the test split and gates it on how much of the teacher's accuracy it keeps."""
    from kdflow.components.common.component import run_step
    from kdflow.components.student_eval import task

    return run_step(task, locals())
