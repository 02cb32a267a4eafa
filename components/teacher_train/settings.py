"""The teacher_train step's interface: its settings (checked on construction), the files it reads and writes, the
value it returns.

Light (standard library and kdflow's own light modules only), so that the command line checks a run's settings
before the pipeline starts.
"""

from dataclasses import dataclass

from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.settings import artifact, check_choice, check_positive, returned, setting
from kdflow.components.common.training import PRECISIONS


@dataclass(frozen=True)
class Settings:
    teacher: str = setting("A base checkpoint URI (folder, hub id or gs://) or config:NAME|PATH to train from "
                           "scratch.")
    epochs: float = setting("Training epochs.")
    batch_size: int = setting("Per-device training batch size.")
    learning_rate: float = setting("Peak learning rate (linear decay after 10% warm-up).")
    precision: str = setting("auto (bf16 on GPUs that support it, else fp16; on a CPU, bf16 where it has bf16 "
                             "kernels, else fp32), fp32, bf16 or fp16.")
    seed: int = setting("Random seed of initialisation, shuffling and dropout.")
    checkpoint_steps: int = setting("Optimizer steps between checkpoints, from which a restarted (e.g. preempted) "
                                    "task resumes; 0 for none.")
    checkpoint_uri: str = setting("Where checkpoints go (gs:// or a folder on a volume); empty: beside the output "
                                  "in the pipeline root.")

    def __post_init__(self):
        check_choice("precision", self.precision, PRECISIONS)
        check_positive(self, "epochs", "batch_size", "learning_rate")
        if self.checkpoint_steps < 0:
            raise KdflowInputError(f"checkpoint_steps={self.checkpoint_steps} must be a number of optimizer steps, "
                                   "or 0 for no checkpoints.")


@dataclass(frozen=True)
class Files:
    data: str = artifact("Tokenized splits from data_prep.")
    teacher_model: str = artifact("The fine-tuned teacher, a save_pretrained folder with the data's tokenizer.",
                                  output=True)
    training_curves: str = artifact("Training and validation losses as a self-contained HTML page.", output=True)


@dataclass(frozen=True)
class Result:
    teacher_uri: str = returned("The teacher_model artifact's URI, for the steps that load the teacher by URI.",
                                uri_of="teacher_model")
