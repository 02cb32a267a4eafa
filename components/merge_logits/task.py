"""The merge_logits step: the teacher_shard steps' logits put back together in row order.

    python -m kdflow.components.merge_logits.task --shards SHARD_DIR... --teacher-logits LOGITS_DIR
"""

import json
import sys
from pathlib import Path

from kdflow.components.common import step
from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.inference import SHARD_INFO

from .settings import Files, Result, Settings  # noqa: F401 (Result, Settings: the step's interface)


def run(settings: Settings, files: Files) -> None:
    """Concatenates the shards' logits in shard order (the order shards arrive in is not the shard order), split by
    split: every shard holds the same splits (inference.logit_splits of the data)."""
    import datasets

    indexed = {json.loads(Path(folder, SHARD_INFO).read_text())["shard"]: folder for folder in files.shards}
    if sorted(indexed) != list(range(len(files.shards))):
        raise KdflowInputError(f"The shards hold indices {sorted(indexed)}, not 0 to {len(files.shards) - 1} once "
                               "each: rerun the teacher_shard steps of this run.")
    shards = [datasets.load_from_disk(indexed[index]) for index in range(len(indexed))]
    merged = datasets.DatasetDict({
        name: datasets.concatenate_datasets([shard[name] for shard in shards]) for name in shards[0]
    })
    merged.save_to_disk(files.teacher_logits)


def main(argv: list[str] | None = None) -> None:
    step.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
