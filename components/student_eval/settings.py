"""The student_eval step's interface: its setting (checked on construction), the files it reads and writes, the
values it returns.

Light (standard library only), so that the command line checks a run's settings before the pipeline starts.
"""

from dataclasses import dataclass

from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.settings import CheckedSettings, artifact, returned, setting


@dataclass(frozen=True)
class Settings(CheckedSettings):
    min_retention: float = setting("Least student accuracy / teacher accuracy for the gate to pass.")
    min_accuracy_margin: float = setting(
        "How far above the majority-class rate of the test split (what always answering its commonest class "
        "scores) the student's and the teacher's test accuracy must lie for the gate to pass, in [0, 1).")

    def check(self):
        if not 0 <= self.min_retention <= 1:
            # Above 1 the student would have to beat its teacher, which distillation does not aim at.
            raise KdflowInputError(f"min_retention={self.min_retention} must lie in [0, 1]: 0.97 asks the student "
                                   "to keep 97% of the teacher's accuracy.")
        if not 0 <= self.min_accuracy_margin < 1:
            raise KdflowInputError(f"min_accuracy_margin={self.min_accuracy_margin} must lie in [0, 1): 0.05 asks "
                                   "for 5 points above always answering the commonest class.")


@dataclass(frozen=True)
class Files:
    data: str = artifact("Tokenized splits from data_prep.")
    student: str = artifact("The distilled student from distill.")
    teacher_metrics: str = artifact("The teacher's test metrics from teacher_eval.")
    student_metrics: str = artifact("The student's test accuracy, macro F1, confusion matrix, size, latency, "
                                    "retention and gate decision, as JSON (kdflow.components.common.results."
                                    "Evaluation).", output=True)
    student_confusion: str = artifact("The test confusion matrix, drawn by the KFP UI.", output=True)


@dataclass(frozen=True)
class Result:
    passed: bool = returned("True when retention >= min_retention.")
    retention: float = returned("Student accuracy / teacher accuracy on the test split.")
