"""KFP definition of the teacher_eval step; its settings are declared in settings.py, the work is in task.py."""

from kfp.dsl import ClassificationMetrics, Dataset, Input, Metrics, Output

from kdflow.components.common.component import step_component
from kdflow.components.common.images import TRAINER_IMAGE
from kdflow.components.teacher_eval import settings


@step_component(settings, base_image=TRAINER_IMAGE)
def teacher_eval(
    data: Input[Dataset],
    teacher_logits: Output[Dataset],
    teacher_metrics: Output[Metrics],
    teacher_confusion: Output[ClassificationMetrics],
    teacher: str,
    cache_logits: bool,
    precision: str,
):
    """Evaluates the teacher on the test split and caches its logits on the training data."""
    from kdflow.components.common.component import run_step
    from kdflow.components.teacher_eval import task

    return run_step(task, locals())
