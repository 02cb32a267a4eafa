"""KFP definition of the teacher_train step; the work is in task.py."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Model, Output

from kdflow.components.common.command import TaskCommand
from kdflow.components.common.images import TRAINER_IMAGE

# The step as `python -m kdflow.components.teacher_train.task`: see kdflow.components.common.command.
COMMAND = TaskCommand(
    renamed={"teacher_model": "--output", "training_curves": "--curves"}, returns_uri_of={"Output": "teacher_model"},
)


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def teacher_train(
    data: Input[Dataset],
    teacher_model: Output[Model],
    training_curves: Output[HTML],
    teacher: str,
    epochs: float = 2.0,
    batch_size: int = 16,
    learning_rate: float = 5e-5,
    precision: str = "auto",
    seed: int = 42,
    checkpoint_steps: int = 500,
    checkpoint_uri: str = "",
) -> str:
    """Fine-tunes the teacher on the training split when no fine-tuned teacher is given.

    Args:
        data: Tokenized splits from data_prep.
        teacher: A base checkpoint URI (folder, hub id or gs://) or config:NAME|PATH to train from scratch.
        epochs: Training epochs.
        batch_size: Per-device training batch size.
        learning_rate: Peak learning rate (linear decay after 10% warm-up).
        precision: auto (bf16 on GPUs that support it, else fp16; on a CPU, bf16 where it has bf16 kernels, else fp32), fp32, bf16 or fp16.
        seed: Random seed.
        checkpoint_steps: Optimizer steps between checkpoints, from which a restarted (e.g. preempted) task resumes;
            0 for none.
        checkpoint_uri: Where checkpoints go (gs:// or a folder on a volume); empty: beside the output in the
            pipeline root.

    Returns:
        teacher_model: The fine-tuned teacher, a save_pretrained folder with the data's tokenizer.
        training_curves: Training and validation losses as a self-contained HTML page.
        Output: The teacher_model artifact's URI, for the steps that load the teacher by URI.
    """
    from kdflow.components.common import checkpoints
    from kdflow.components.teacher_train import task

    task.run(
        data_dir=data.path, teacher=teacher, output_dir=teacher_model.path, curves_path=training_curves.path,
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, precision=precision, seed=seed,
        checkpoint_steps=checkpoint_steps,
        # The artifact's URI, not its path: on a cluster the path is in the pod, which a preemption takes away.
        checkpoint_uri=checkpoint_uri or checkpoints.default_uri(teacher_model.uri),
    )
    return teacher_model.uri
