"""The teacher_eval step's interface: its settings (checked on construction), the files it reads and writes.

Light (standard library and kdflow's own light modules only), so that the command line checks a run's settings
before the pipeline starts.
"""

from dataclasses import dataclass

from kdflow.components.common.settings import CheckedSettings, artifact, check_choice, setting
from kdflow.components.common.training import PRECISIONS, TEACHER_HELP


@dataclass(frozen=True)
class Settings(CheckedSettings):
    teacher: str = setting(TEACHER_HELP["teacher"])
    cache_logits: bool = setting("Compute the logits on the training data here; false when teacher_shard steps "
                                 "compute them.")
    precision: str = setting(TEACHER_HELP["precision"])

    def check(self):
        check_choice("precision", self.precision, PRECISIONS)


@dataclass(frozen=True)
class Files:
    data: str = artifact("Tokenized splits from data_prep.")
    teacher_logits: str = artifact("The teacher's logits on the train and validation splits, and unlabeled when "
                                   "the data has it, one row per data row, "
                                   "in order (without cache_logits: a note).", output=True)
    teacher_metrics: str = artifact("The teacher's test accuracy, macro F1, confusion matrix, size and latency, as "
                                    "JSON (kdflow.components.common.results.Evaluation).", output=True)
    teacher_confusion: str = artifact("The test confusion matrix, drawn by the KFP UI.", output=True)


Result = None
