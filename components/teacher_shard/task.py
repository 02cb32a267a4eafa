"""The teacher_shard step: the teacher's logits on one shard of the training data, for sharded teacher inference.

With `kdflow compile --teacher-shards N`, N of these run side by side (each on its own GPU on a cluster) and
merge_logits puts their logits back together in row order. Shard I of N holds a contiguous range of rows of each
split, so concatenating the shards in shard order restores the splits' row order.

    python -m kdflow.components.teacher_shard.task --data DATA_DIR --teacher TEACHER_URI --shard 0 --shards 3 \
        --teacher-logits SHARD_DIR
"""

import argparse
import json
from pathlib import Path

from kdflow.components.common import models
from kdflow.components.common.data import load_prepared
from kdflow.components.common.errors import KdflowInputError
from kdflow.components.teacher_eval.task import LOGIT_SPLITS, teacher_logits

SHARD_INFO = "shard.json"  # which shard a folder holds, read by merge_logits


def shard_rows(rows: int, shard: int, shards: int) -> range:
    """Shard `shard` of `shards` contiguous, near-equal ranges of `rows` rows (sizes differ by at most one)."""
    return range(shard * rows // shards, (shard + 1) * rows // shards)


def run(*, data_dir: str, teacher: str, shard: int, shards: int, logits_dir: str, batch_size: int = 64,
        precision: str = "auto") -> None:
    """Stores the teacher's logits on shard `shard` of each split in LOGIT_SPLITS, in row order, in `logits_dir`."""
    if not 0 <= shard < shards:
        raise KdflowInputError(f"shard={shard} must lie in [0, shards={shards}).")
    data = load_prepared(data_dir)
    smallest = min(len(data.splits[name]) for name in LOGIT_SPLITS)
    if shards > smallest:
        raise KdflowInputError(f"teacher_shards={shards} is more than the {smallest} rows of a split: use fewer.")
    model = models.load_classifier(teacher, data.num_labels, fine_tuned=True)
    logits = teacher_logits(model, data, batch_size, rows=lambda length: shard_rows(length, shard, shards),
                            precision=precision)
    logits.save_to_disk(logits_dir)
    Path(logits_dir, SHARD_INFO).write_text(json.dumps({"shard": shard, "shards": shards}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="prepared-data folder (data_prep output)")
    parser.add_argument("--teacher", required=True, help="fine-tuned teacher: folder, hub id or gs:// URI")
    parser.add_argument("--shard", type=int, required=True, help="this shard's index, from 0")
    parser.add_argument("--shards", type=int, required=True, help="the number of shards")
    parser.add_argument("--teacher-logits", required=True, help="folder for this shard's logits")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16 (GPU)")
    args = parser.parse_args(argv)
    run(data_dir=args.data, teacher=args.teacher, shard=args.shard, shards=args.shards,
        logits_dir=args.teacher_logits, batch_size=args.batch_size, precision=args.precision)


if __name__ == "__main__":
    main()
