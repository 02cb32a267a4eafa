"""KFP definition of the teacher_eval step; the work is in task.py."""

from kfp import dsl
from kfp.dsl import ClassificationMetrics, Dataset, Input, Metrics, Output

from kdflow.components.common.command import TaskCommand
from kdflow.components.common.images import TRAINER_IMAGE

# The step as `python -m kdflow.components.teacher_eval.task`: see kdflow.components.common.command.
COMMAND = TaskCommand(
    renamed={"teacher_logits": "--logits", "teacher_metrics": "--metrics"}, not_written=("teacher_confusion",),
)


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def teacher_eval(
    data: Input[Dataset],
    teacher_logits: Output[Dataset],
    teacher_metrics: Output[Metrics],
    teacher_confusion: Output[ClassificationMetrics],
    teacher: str,
    batch_size: int = 64,
    cache_logits: bool = True,
    precision: str = "auto",
):
    """Evaluates the teacher on the test split and caches its logits on the training data.

    Args:
        data: Tokenized splits from data_prep.
        teacher: URI of the fine-tuned teacher: a folder, a hub id or gs://.
        batch_size: Inference batch size (batches are grouped by length).
        cache_logits: Compute the logits on the training data here; false when teacher_shard steps compute them.
        precision: What the teacher computes in: auto (bf16 where the GPU or CPU has bf16 kernels), fp32, bf16 or fp16.

    Returns:
        teacher_logits: The teacher's logits on the train and validation splits, one row per data row, in order (without cache_logits: a note).
        teacher_metrics: Test accuracy, macro F1 and confusion matrix (also as JSON at the artifact's path).
        teacher_confusion: The test confusion matrix, drawn by the KFP UI.
    """
    from kdflow.components.common.metrics import write_confusion_matrix, write_metrics
    from kdflow.components.teacher_eval import task

    metrics = task.run(data_dir=data.path, teacher=teacher, logits_dir=teacher_logits.path, batch_size=batch_size,
                       cache_logits=cache_logits, precision=precision)
    write_metrics(teacher_metrics, metrics)
    write_confusion_matrix(teacher_confusion, metrics["confusion_matrix"], metrics["label_names"])
