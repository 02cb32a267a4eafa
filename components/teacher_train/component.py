"""KFP definition of the teacher_train step; its settings are declared in settings.py, the work is in task.py."""

from typing import NamedTuple

from kfp.dsl import HTML, Dataset, Input, Model, Output

from kdflow.components.common.component import step_component
from kdflow.components.common.images import TRAINER_IMAGE
from kdflow.components.teacher_train import settings


@step_component(settings, base_image=TRAINER_IMAGE)
def teacher_train(
    data: Input[Dataset],
    teacher_model: Output[Model],
    training_curves: Output[HTML],
    teacher: str,
    epochs: float,
    batch_size: int,
    learning_rate: float,
    precision: str,
    seed: int,
    checkpoint_steps: int,
    checkpoint_uri: str,
    report_to: str,
    tracking_uri: str,
    experiment: str,
) -> NamedTuple("Outputs", teacher_uri=str):
    """Fine-tunes the teacher on the training split when no fine-tuned teacher is given."""
    from kdflow.components.common import checkpoints
    from kdflow.components.common.component import run_step
    from kdflow.components.teacher_train import task

    # Checkpoints by default beside the teacher's URI, not its path: on a cluster the path is in the pod, which a
    # preemption takes away.
    return run_step(task, locals(), checkpoint_uri=checkpoint_uri or checkpoints.default_uri(teacher_model.uri))
