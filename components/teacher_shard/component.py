"""KFP definition of the teacher_shard step; its settings are declared in settings.py, the work is in task.py."""

from kfp.dsl import Dataset, Input, Output

from kdflow.components.common.component import step_component
from kdflow.components.common.images import TRAINER_IMAGE
from kdflow.components.teacher_shard import settings


@step_component(settings, base_image=TRAINER_IMAGE)
def teacher_shard(
    data: Input[Dataset],
    teacher_logits: Output[Dataset],
    teacher: str,
    shard: int,
    shards: int,
    precision: str,
):
    """Computes the teacher's logits on one shard of the train and validation splits, and of unlabeled when the data
    has it (batches grouped by length)."""
    from kdflow.components.common.component import run_step
    from kdflow.components.teacher_shard import task

    return run_step(task, locals())
