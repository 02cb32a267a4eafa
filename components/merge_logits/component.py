"""KFP definition of the merge_logits step; the work is in task.py."""

from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from kdflow.components.common.command import TaskCommand
from kdflow.components.common.images import RUNTIME_IMAGE

# The step as `python -m kdflow.components.merge_logits.task`: see kdflow.components.common.command.
COMMAND = TaskCommand()


@dsl.component(base_image=RUNTIME_IMAGE, install_kfp_package=False)
def merge_logits(shards: Input[List[Dataset]], teacher_logits: Output[Dataset]):
    """Merges the teacher_shard steps' logits into one row-aligned Dataset, as teacher_eval writes it unsharded.

    Args:
        shards: The logits of every shard, collected from the teacher_shard steps, in any order.

    Returns:
        teacher_logits: The teacher's logits on the train and validation splits, one row per data row, in order.
    """
    from kdflow.components.merge_logits import task

    task.run(shard_dirs=[shard.path for shard in shards], logits_dir=teacher_logits.path)
