"""KFP definition of the teacher_check step; the work is in task.py."""

from kfp import dsl
from kfp.dsl import Dataset, Input

from kdflow.components.common.command import TaskCommand
from kdflow.components.common.images import RUNTIME_IMAGE

# The step as `python -m kdflow.components.teacher_check.task`: see kdflow.components.common.command.
COMMAND = TaskCommand(returns_input={"Output": "teacher"})


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def teacher_check(data: Input[Dataset], teacher: str) -> str:
    """Checks a given fine-tuned teacher against the data, before any expensive step.

    Runs instead of teacher_train when train_teacher is false: the teacher must have a trained
    classification head for the data's number of labels, the data's tokenizer and room for max_length.

    Args:
        data: Tokenized splits from data_prep.
        teacher: URI of the fine-tuned teacher: a folder, a hub id or gs://.

    Returns:
        The teacher's URI, for the steps that load it.
    """
    from kdflow.components.teacher_check import task

    return task.run(data_dir=data.path, teacher=teacher)
