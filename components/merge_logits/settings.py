"""The merge_logits step's interface: the files it reads and writes; it takes no settings.

Light (standard library only), like every step's settings module.
"""

from dataclasses import dataclass

from kdflow.components.common.settings import artifact

Settings = None


@dataclass(frozen=True)
class Files:
    shards: list[str] = artifact("The logits of every shard, collected from the teacher_shard steps, in any order.")
    teacher_logits: str = artifact("The teacher's logits on the train and validation splits, and unlabeled when "
                                   "the data has it, one row per data row, "
                                   "in order.", output=True)


Result = None
