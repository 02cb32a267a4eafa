"""KFP definition of the distill step; its settings are declared in settings.py, the work is in task.py."""

from kfp.dsl import HTML, Dataset, Input, Model, Output

from kdflow.components.common.component import step_component
from kdflow.components.common.images import TRAINER_IMAGE
from kdflow.components.distill import settings


@step_component(settings, base_image=TRAINER_IMAGE)
def distill(
    data: Input[Dataset],
    teacher_logits: Input[Dataset],
    student: Output[Model],
    training_curves: Output[HTML],
    teacher: str,
    student_spec: str,
    student_layers: int,
    layers_from: str,
    student_attention_dropout: float,
    distill_mode: str,
    temperature: float,
    alpha: float,
    hidden_cosine_weight: float,
    hidden_mse_weight: float,
    embedding_mse_weight: float,
    attention_kl_weight: float,
    layer_map: str,
    hidden_projection: bool,
    epochs: float,
    batch_size: int,
    learning_rate: float,
    gradient_accumulation_steps: int,
    precision: str,
    seed: int,
    checkpoint_steps: int,
    checkpoint_uri: str,
    processes: int,
    report_to: str,
    tracking_uri: str,
    experiment: str,
    tracked_as: str,
):
    """Distills the teacher into a smaller student with the recipe's loss.

    loss = alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(softmax(teacher/T) || softmax(student/T)),
    plus the weighted intermediate-layer terms (hidden states, embeddings, attention maps) in online mode.
    """
    from kdflow.components.common import checkpoints
    from kdflow.components.common.component import run_step
    from kdflow.components.distill import task

    # Checkpoints by default beside the student's URI, not its path: on a cluster the path is in the pod, which a
    # preemption takes away.
    run_step(task, locals(), checkpoint_uri=checkpoint_uri or checkpoints.default_uri(student.uri))
