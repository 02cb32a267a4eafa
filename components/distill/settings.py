"""The distill step's interface: its settings (checked on construction), the files it reads and writes.

Light (standard library only), so that the command line checks a run's settings before the pipeline starts.
"""

from dataclasses import dataclass

from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.models import FROM_TEACHER, check_spec
from kdflow.components.common.settings import CheckedSettings, artifact, check_choice, check_positive, setting
from kdflow.components.common.training import (
    TRACKING_HELP, TRAINING_HELP, check_tracking_settings, check_training_settings,
)

MODES = ("cached", "online")
# What a distill task trains, as experiment tracking names it: the student, and the hard-label baselines made from
# the fine-tuned teacher's layers and from its pretrained checkpoint's.
TRAININGS = ("student", "baseline", "pretrained_baseline")
# Each term's weight setting, and the loss it logs (beside hard_loss and soft_loss, and drawn in the loss curves).
TERMS = {
    "hidden_cosine_weight": "hidden_cosine_loss",
    "hidden_mse_weight": "hidden_mse_loss",
    "embedding_mse_weight": "embedding_mse_loss",
    "attention_kl_weight": "attention_kl_loss",
}


def parse_layer_map(text: str) -> dict[int, int]:
    """`1:2,2:4` as {1: 2, 2: 4}; empty: {} (the default map). One sentence for anything else."""
    if not text.strip():
        return {}
    layer_map = {}
    for pair in text.split(","):
        student, separator, teacher = pair.strip().partition(":")
        if not (separator and student.strip().isdigit() and teacher.strip().isdigit()):
            raise KdflowInputError(f"layer_map={text!r} is not STUDENT:TEACHER pairs of layer numbers: write e.g. "
                                   "layer_map=1:2,2:4,3:6 (layers counted from 1; empty: the default map).")
        student_layer, teacher_layer = int(student), int(teacher)
        if student_layer < 1 or teacher_layer < 1:
            raise KdflowInputError(f"layer_map={text!r} names layer 0: layers count from 1 (the embeddings are "
                                   "matched by embedding_mse_weight).")
        if student_layer in layer_map:
            raise KdflowInputError(f"layer_map={text!r} maps student layer {student_layer} twice: give each student "
                                   "layer one teacher layer.")
        layer_map[student_layer] = teacher_layer
    return layer_map


@dataclass(frozen=True)
class Settings(CheckedSettings):
    teacher: str = setting("URI of the fine-tuned teacher (folder, hub id, gs:// or s3://); loaded for from_teacher "
                           "and online mode.")
    student_spec: str = setting("The student: from_teacher (the teacher's embeddings, head and every other layer: a "
                                "DistilBERT from a BERT teacher, the teacher's own architecture from any other), "
                                "config:NAME|PATH (random init) or a checkpoint URI.")
    student_layers: int = setting("Layers of a from_teacher student; 0 takes half the teacher's.")
    layers_from: str = setting("Checkpoint whose layers a from_teacher student is made from; empty: the teacher. The "
                               "pipeline's pretrained baseline gives the teacher's checkpoint before fine-tuning.")
    student_attention_dropout: float = setting(
        "Attention dropout of a from_teacher student: 0 keeps PyTorch's fused attention kernel (about 2x faster "
        "training), 0.1 is DistilBERT's.")
    distill_mode: str = setting("cached (read the teacher's stored logits) or online (run the teacher in every "
                                "step; needed when tokenizers differ).")
    temperature: float = setting("Softmax temperature T of the soft term, above 0.")
    alpha: float = setting("Weight of the hard-label cross-entropy, in [0, 1]; the soft term gets 1 - alpha.")
    hidden_cosine_weight: float = setting("Weight of DistilBERT's cosine loss between matched student and teacher "
                                          "hidden states; 0 (off) or above; online mode only.")
    hidden_mse_weight: float = setting("Weight of TinyBERT's mean squared error between matched hidden states "
                                       "(through a learned projection when the widths differ); online mode only.")
    embedding_mse_weight: float = setting("Weight of TinyBERT's mean squared error between the embedding outputs; "
                                          "online mode only.")
    attention_kl_weight: float = setting("Weight of the KL divergence between matched layers' self-attention "
                                         "distributions, per head (MiniLM, TinyBERT); online mode only.")
    layer_map: str = setting("Student layer to teacher layer pairs of the intermediate terms, e.g. 1:2,2:4,3:6 "
                             "(layers from 1); empty: the layers a from_teacher student was made from, else uniform.")
    hidden_projection: bool = setting("Learn a linear projection from the student's hidden width to the teacher's "
                                      "when they differ (trained with the student, never exported); false refuses "
                                      "such a pair.")
    epochs: float = setting(TRAINING_HELP["epochs"])
    batch_size: int = setting("Training batch of an optimizer step (before accumulation), split evenly across the "
                              "processes.")
    learning_rate: float = setting(TRAINING_HELP["learning_rate"])
    gradient_accumulation_steps: int = setting("Batches accumulated per optimizer step.")
    precision: str = setting(TRAINING_HELP["precision"])
    seed: int = setting(TRAINING_HELP["seed"])
    checkpoint_steps: int = setting(TRAINING_HELP["checkpoint_steps"])
    checkpoint_uri: str = setting(TRAINING_HELP["checkpoint_uri"])
    # Not `nproc`: torchrun's parser would read a --nproc after the module as its ambiguous --nproc-per-node prefix.
    processes: int = setting("Processes under torchrun (DDP), one GPU each, on one node; set with `kdflow compile "
                             "--nproc`.")
    report_to: str = setting(TRACKING_HELP["report_to"])
    tracking_uri: str = setting(TRACKING_HELP["tracking_uri"])
    experiment: str = setting(TRACKING_HELP["experiment"])
    tracked_as: str = setting("This training's name in the pipeline run's tracking: student, or baseline or "
                              "pretrained_baseline for the hard-label comparisons.")

    def check(self):
        check_loss(self.temperature, self.alpha)
        check_choice("distill_mode", self.distill_mode, MODES)
        check_intermediate(self)
        if self.student_layers < 0:
            raise KdflowInputError(f"student_layers={self.student_layers} must be a number of layers, or 0 for half "
                                   "the teacher's.")
        if not 0 <= self.student_attention_dropout < 1:
            raise KdflowInputError(
                f"student_attention_dropout={self.student_attention_dropout} must lie in [0, 1): 0 keeps PyTorch's "
                "fused attention kernel, the recipe's DistilBERT uses 0.1.")
        check_training_settings(self)
        check_spec("student_spec", self.student_spec, student=True)
        check_positive(self, "gradient_accumulation_steps", "processes")
        check_processes(self.batch_size, self.processes)
        check_tracking_settings(self)
        check_choice("tracked_as", self.tracked_as, TRAININGS)


def check_loss(temperature: float, alpha: float) -> None:
    """The loss's settings, checked here and by the Trainer's arguments (trainer.DistillationArguments)."""
    if not temperature > 0:
        raise KdflowInputError(f"temperature={temperature} must be above 0: the recipe uses 2.")
    if not 0 <= alpha <= 1:
        raise KdflowInputError(f"alpha={alpha} must lie in [0, 1] (the weight of the hard-label loss): the recipe "
                               "uses 0.5.")


def check_intermediate(settings: "Settings") -> None:
    """The intermediate terms' settings: weights of 0 or more, a layer map that reads, and the teacher's hidden
    states at hand (online mode: cached mode stores the teacher's logits only)."""
    for name in TERMS:
        if getattr(settings, name) < 0:
            raise KdflowInputError(f"{name}={getattr(settings, name)} is negative: give 0 (off) or a positive weight.")
    parse_layer_map(settings.layer_map)
    asked = [name for name in TERMS if getattr(settings, name) > 0]
    if asked and settings.distill_mode != "online":
        raise KdflowInputError(f"{asked[0]}={getattr(settings, asked[0])} needs the teacher's hidden states, which "
                               f"distill_mode={settings.distill_mode} does not keep: set distill_mode=online.")
    if settings.layers_from and settings.student_spec != FROM_TEACHER:
        raise KdflowInputError(f"layers_from={settings.layers_from!r} applies to student=from_teacher only: leave it "
                               "empty for this student.")


def check_processes(batch_size: int, processes: int) -> None:
    """batch_size is the global batch of an optimizer step: each of the processes takes an equal share."""
    if batch_size % processes:
        raise KdflowInputError(f"batch_size={batch_size} does not split evenly across {processes} processes: it is "
                               f"the global batch of a step, so make it a multiple of {processes} (--nproc).")


@dataclass(frozen=True)
class Files:
    data: str = artifact("Tokenized train/validation/test splits from data_prep.")
    teacher_logits: str = artifact("The teacher's logits on the train and validation splits (teacher_eval), used in "
                                   "cached mode.")
    student: str = artifact("The distilled student, a save_pretrained folder with its tokenizer and "
                            "training_log.json.", output=True)
    training_curves: str = artifact("Training and validation losses per logging step, as a self-contained HTML "
                                    "page.", output=True)


Result = None

