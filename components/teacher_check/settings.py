"""The teacher_check step's interface: its setting, the files it reads and writes, the value it returns.

Light (standard library only), so that the command line checks a run's settings before the pipeline starts.
"""

from dataclasses import dataclass

from kdflow.components.common.settings import CheckedSettings, artifact, returned, setting
from kdflow.components.common.training import TEACHER_HELP


@dataclass(frozen=True)
class Settings(CheckedSettings):
    teacher: str = setting(TEACHER_HELP["teacher"])


@dataclass(frozen=True)
class Files:
    data: str = artifact("Tokenized splits from data_prep.")
    teacher_card: str = artifact("The checked teacher in a few lines of Markdown: architecture, number of labels, "
                                 "vocabulary size and position limit.", output=True)


@dataclass(frozen=True)
class Result:
    teacher_uri: str = returned("The teacher's URI (its input, once checked), for the steps that load it.")
