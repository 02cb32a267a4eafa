"""KFP definition of the teacher_check step; its setting is declared in settings.py, the work is in task.py."""

from typing import NamedTuple

from kfp.dsl import Dataset, Input, Markdown, Output

from kdflow.components.common.component import step_component
from kdflow.components.common.images import RUNTIME_IMAGE
from kdflow.components.teacher_check import settings


@step_component(settings, base_image=RUNTIME_IMAGE)
def teacher_check(
    data: Input[Dataset],
    teacher_card: Output[Markdown],
    teacher: str,
) -> NamedTuple("Outputs", teacher_uri=str):
    """Checks a given fine-tuned teacher against the data, before any expensive step.

    Runs instead of teacher_train when train_teacher is false: the teacher must have a trained
    classification head for the data's number of labels, the data's tokenizer and room for max_length.
    """
    from kdflow.components.common.component import run_step
    from kdflow.components.teacher_check import task

    return run_step(task, locals())
