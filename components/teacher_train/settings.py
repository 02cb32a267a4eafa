"""The teacher_train step's interface: its settings (checked on construction), the files it reads and writes, the
value it returns.

Light (standard library and kdflow's own light modules only), so that the command line checks a run's settings
before the pipeline starts.
"""

from dataclasses import dataclass

from kdflow.components.common.models import check_spec
from kdflow.components.common.settings import CheckedSettings, artifact, returned, setting
from kdflow.components.common.training import (
    TRACKING_HELP, TRAINING_HELP, check_tracking_settings, check_training_settings,
)


@dataclass(frozen=True)
class Settings(CheckedSettings):
    teacher: str = setting("A base checkpoint URI (folder, hub id, gs:// or s3://) or config:NAME|PATH to train from "
                           "scratch.")
    epochs: float = setting(TRAINING_HELP["epochs"])
    batch_size: int = setting("Per-device training batch size.")
    learning_rate: float = setting(TRAINING_HELP["learning_rate"])
    precision: str = setting(TRAINING_HELP["precision"])
    seed: int = setting(TRAINING_HELP["seed"])
    checkpoint_steps: int = setting(TRAINING_HELP["checkpoint_steps"])
    checkpoint_uri: str = setting(TRAINING_HELP["checkpoint_uri"])
    report_to: str = setting(TRACKING_HELP["report_to"])
    tracking_uri: str = setting(TRACKING_HELP["tracking_uri"])
    experiment: str = setting(TRACKING_HELP["experiment"])

    def check(self):
        check_training_settings(self)
        check_spec("teacher", self.teacher)
        check_tracking_settings(self)


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
