"""KFP definition of the distill step; the work is in task.py."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Model, Output

from kdflow.components.common.command import TaskCommand
from kdflow.components.common.images import TRAINER_IMAGE

# The step as `python -m kdflow.components.distill.task`: see kdflow.components.common.command.
COMMAND = TaskCommand(renamed={"student": "--output", "training_curves": "--curves", "student_spec": "--student"})


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def distill(
    data: Input[Dataset],
    teacher_logits: Input[Dataset],
    student: Output[Model],
    training_curves: Output[HTML],
    teacher: str,
    student_spec: str = "from_teacher",
    student_layers: int = 0,
    student_attention_dropout: float = 0.0,
    distill_mode: str = "cached",
    temperature: float = 2.0,
    alpha: float = 0.5,
    epochs: float = 2.0,
    batch_size: int = 8,
    learning_rate: float = 5e-5,
    gradient_accumulation_steps: int = 1,
    precision: str = "auto",
    seed: int = 42,
    checkpoint_steps: int = 500,
    checkpoint_uri: str = "",
    nproc: int = 1,
):
    """Distills the teacher into a smaller student with the recipe's loss.

    loss = alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(teacher/T) || softmax(student/T)).

    Args:
        data: Tokenized train/validation/test splits from data_prep.
        teacher_logits: The teacher's logits on the train and validation splits (teacher_eval), used in cached mode.
        teacher: URI of the fine-tuned teacher (folder, hub id or gs://); loaded for from_teacher and online mode.
        student_spec: The student: from_teacher (a DistilBERT from the BERT teacher's layers), config:NAME|PATH (random init) or a checkpoint URI.
        student_layers: Layers of a from_teacher student; 0 takes half the teacher's.
        student_attention_dropout: Attention dropout of a from_teacher student: 0 keeps PyTorch's fused attention kernel (about 2x faster training), 0.1 is DistilBERT's.
        distill_mode: cached (read the teacher's stored logits) or online (run the teacher in every step; needed when tokenizers differ).
        temperature: Softmax temperature T of the soft term, above 0.
        alpha: Weight of the hard-label cross-entropy, in [0, 1]; the soft term gets 1 - alpha.
        epochs: Training epochs.
        batch_size: Training batch of an optimizer step (before accumulation), split evenly across the nproc processes.
        learning_rate: Peak learning rate (linear decay after 10% warm-up).
        gradient_accumulation_steps: Batches accumulated per optimizer step.
        precision: auto (bf16 on GPUs that support it, else fp16; on a CPU, bf16 where it has bf16 kernels, else fp32), fp32, bf16 or fp16.
        seed: Random seed of initialisation, shuffling and dropout.
        checkpoint_steps: Optimizer steps between checkpoints, from which a restarted (e.g. preempted) task resumes;
            0 for none.
        checkpoint_uri: Where checkpoints go (gs:// or a folder on a volume); empty: beside the output in the
            pipeline root.
        nproc: Processes under torchrun (DDP), one GPU each, on one node; set with `kdflow compile --nproc`.

    Returns:
        student: The distilled student, a save_pretrained folder with its tokenizer and training_log.json.
        training_curves: Training and validation losses per logging step, as a self-contained HTML page.
    """
    from kdflow.components.common import checkpoints
    from kdflow.components.distill import task

    task.launch(
        nproc=nproc, data_dir=data.path, teacher_logits_dir=teacher_logits.path, teacher=teacher, student=student_spec,
        output_dir=student.path, curves_path=training_curves.path, student_layers=student_layers,
        student_attention_dropout=student_attention_dropout,
        distill_mode=distill_mode, temperature=temperature, alpha=alpha, epochs=epochs, batch_size=batch_size,
        learning_rate=learning_rate, gradient_accumulation_steps=gradient_accumulation_steps, precision=precision,
        seed=seed, checkpoint_steps=checkpoint_steps,
        # The artifact's URI, not its path: on a cluster the path is in the pod, which a preemption takes away.
        checkpoint_uri=checkpoint_uri or checkpoints.default_uri(student.uri),
    )
