"""The teacher_shard step's interface: its settings (checked on construction), the files it reads and writes.

Light (standard library and kdflow's own light modules only), so that the command line checks a run's settings
before the pipeline starts.
"""

from dataclasses import dataclass

from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.settings import CheckedSettings, artifact, check_choice, setting
from kdflow.components.common.training import PRECISIONS, TEACHER_HELP


@dataclass(frozen=True)
class Settings(CheckedSettings):
    teacher: str = setting(TEACHER_HELP["teacher"])
    shard: int = setting("This shard's index, from 0.")
    shards: int = setting("The number of shards; shard I holds the I-th of that many contiguous row ranges of each "
                          "split.")
    precision: str = setting(TEACHER_HELP["precision"])

    def check(self):
        if not 0 <= self.shard < self.shards:
            raise KdflowInputError(f"shard={self.shard} must lie in [0, shards={self.shards}).")
        check_choice("precision", self.precision, PRECISIONS)


@dataclass(frozen=True)
class Files:
    data: str = artifact("Tokenized splits from data_prep.")
    teacher_logits: str = artifact("The teacher's logits on this shard's rows, in row order, with the shard's "
                                   "index.", output=True)


Result = None
