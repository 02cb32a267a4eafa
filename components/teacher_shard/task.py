"""The teacher_shard step: the teacher's logits on one shard of the training data, for sharded teacher inference.

With `kdflow compile --teacher-shards N`, N of these run side by side (each on its own GPU on a cluster) and
merge_logits puts their logits back together in row order. Shard I of N holds a contiguous range of rows of each
split, so concatenating the shards in shard order restores the splits' row order.

    python -m kdflow.components.teacher_shard.task --data DATA_DIR --teacher-logits SHARD_DIR \
        --teacher TEACHER_URI --shard 0 --shards 3 --precision auto
"""

import json
import sys
from pathlib import Path

from kdflow.components.common import models, step
from kdflow.components.common.data import load_prepared
from kdflow.components.common.errors import KdflowInputError
from kdflow.components.common.inference import INFERENCE_BATCH_SIZE, SHARD_INFO, logit_splits, teacher_logits

from .settings import Files, Result, Settings  # noqa: F401 (Result: the step's interface)


def shard_rows(rows: int, shard: int, shards: int) -> range:
    """Shard `shard` of `shards` contiguous, near-equal ranges of `rows` rows (sizes differ by at most one)."""
    return range(shard * rows // shards, (shard + 1) * rows // shards)


def run(settings: Settings, files: Files) -> None:
    """Stores the teacher's logits on shard `shard` of each split of `logit_splits`, in row order, in
    `files.teacher_logits`, with the shard's index (SHARD_INFO)."""
    shard, shards = settings.shard, settings.shards
    data = load_prepared(files.data)
    smallest = min(len(data.splits[name]) for name in logit_splits(data))
    if shards > smallest:
        raise KdflowInputError(f"teacher_shards={shards} is more than the {smallest} rows of a split: use fewer.")
    model = models.load_classifier(settings.teacher, data.num_labels, fine_tuned=True)
    logits = teacher_logits(model, data, INFERENCE_BATCH_SIZE, rows=lambda length: shard_rows(length, shard, shards),
                            precision=settings.precision)
    logits.save_to_disk(files.teacher_logits)
    Path(files.teacher_logits, SHARD_INFO).write_text(json.dumps({"shard": shard, "shards": shards}))


def main(argv: list[str] | None = None) -> None:
    step.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
