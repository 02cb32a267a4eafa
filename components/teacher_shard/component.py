"""KFP definition of the teacher_shard step; the work is in task.py."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from kdflow.components.common.command import TaskCommand
from kdflow.components.common.images import TRAINER_IMAGE

# The step as `python -m kdflow.components.teacher_shard.task`: see kdflow.components.common.command.
COMMAND = TaskCommand()


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def teacher_shard(
    data: Input[Dataset],
    teacher_logits: Output[Dataset],
    teacher: str,
    shard: int,
    shards: int,
    batch_size: int = 64,
    precision: str = "auto",
):
    """Computes the teacher's logits on one shard of the train and validation splits.

    Args:
        data: Tokenized splits from data_prep.
        teacher: URI of the fine-tuned teacher: a folder, a hub id or gs://.
        shard: This shard's index, from 0.
        shards: The number of shards; shard I holds the I-th of that many contiguous row ranges of each split.
        batch_size: Inference batch size (batches are grouped by length).
        precision: What the teacher computes in: auto (bf16 where the GPU or CPU has bf16 kernels), fp32, bf16 or fp16.

    Returns:
        teacher_logits: The teacher's logits on this shard's rows, in row order, with the shard's index.
    """
    from kdflow.components.teacher_shard import task

    task.run(data_dir=data.path, teacher=teacher, shard=shard, shards=shards, logits_dir=teacher_logits.path,
             batch_size=batch_size, precision=precision)
