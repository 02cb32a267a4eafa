"""KFP definition of the merge_logits step; its files are declared in settings.py, the work is in task.py."""

from typing import List

from kfp.dsl import Dataset, Input, Output

from kdflow.components.common.component import step_component
from kdflow.components.common.images import RUNTIME_IMAGE
from kdflow.components.merge_logits import settings


@step_component(settings, base_image=RUNTIME_IMAGE)
def merge_logits(shards: Input[List[Dataset]], teacher_logits: Output[Dataset]):
    """Merges the teacher_shard steps' logits into one row-aligned Dataset, as teacher_eval writes it unsharded."""
    from kdflow.components.common.component import run_step
    from kdflow.components.merge_logits import task

    return run_step(task, locals())
