"""The publish step's interface: its settings (checked on construction), the files it reads and writes, the values
it returns.

Light (standard library only), so that the command line checks a run's settings before the pipeline starts. An
empty publish_uri is a run that publishes nowhere (the pipeline skips the step), so only the step refuses it.
"""

import re
from dataclasses import dataclass

from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.settings import CheckedSettings, artifact, returned, setting

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Settings(CheckedSettings):
    publish_uri: str = setting("Destination: gs://bucket/prefix, s3://bucket/prefix or a folder; the model goes to "
                               "PUBLISH_URI/MODEL_NAME/VERSION/.")
    model_name: str = setting("Name of the published model (letters, digits, '.', '_', '-').")
    model_version: str = setting("Version folder name; empty takes the pipeline run's id.")
    promotion_tolerance: float = setting("Accuracy the challenger may lose against the champion and still be "
                                         "promoted.")
    run_id: str = setting("The pipeline run's id (filled in by KFP).")

    def check(self):
        check_name("model_name", self.model_name)
        if self.model_version:  # else the run's id, known once the run is
            check_name("model_version", self.model_version)
        if not 0 <= self.promotion_tolerance <= 1:
            raise KdflowInputError(f"promotion_tolerance={self.promotion_tolerance} must lie in [0, 1]: it is the "
                                   "accuracy the challenger may lose against the champion, e.g. 0.005.")

    @property
    def version(self) -> str:
        return self.model_version or self.run_id


def check_name(parameter: str, value: str) -> None:
    if not NAME.fullmatch(value or ""):  # not match: its $ would also match before a trailing newline
        raise KdflowInputError(
            f"{parameter}={value!r} must be letters, digits, '.', '_' or '-' (no '/'): e.g. imdb-sentiment.")


@dataclass(frozen=True)
class Files:
    data: str = artifact("The prepared data from data_prep: its test rows are the ones the champion is compared on.")
    student: str = artifact("The distilled student (save_pretrained folder) from distill.")
    onnx_model: str = artifact("The ONNX export folder from onnx_export.")
    teacher_metrics: str = artifact("The teacher's test metrics from teacher_eval.")
    student_metrics: str = artifact("The student's test metrics and gate from student_eval.")
    publish_report: str = artifact("The decision, with the challenger's and the champion's figures, as Markdown.",
                                   output=True)


@dataclass(frozen=True)
class Result:
    promoted: bool = returned("True when latest.json now points at this version.")
    version_uri: str = returned("Where this version is (or would have been) published.")
