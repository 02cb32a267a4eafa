"""The merge_logits step: the teacher_shard steps' logits put back together in row order.

    python -m kdflow.components.merge_logits.task --shards SHARD_DIR... --teacher-logits LOGITS_DIR
"""

import argparse
import json
from pathlib import Path

from kdflow.components.common.errors import KdflowInputError
from kdflow.components.teacher_eval.task import LOGIT_SPLITS
from kdflow.components.teacher_shard.task import SHARD_INFO


def run(*, shard_dirs: list[str], logits_dir: str) -> None:
    """Concatenates the shards' logits in shard order (the order shards arrive in is not the shard order)."""
    import datasets

    indexed = {json.loads(Path(folder, SHARD_INFO).read_text())["shard"]: folder for folder in shard_dirs}
    if sorted(indexed) != list(range(len(shard_dirs))):
        raise KdflowInputError(f"The shards hold indices {sorted(indexed)}, not 0 to {len(shard_dirs) - 1} once each: "
                               "rerun the teacher_shard steps of this run.")
    shards = [datasets.load_from_disk(indexed[index]) for index in range(len(indexed))]
    merged = datasets.DatasetDict({
        name: datasets.concatenate_datasets([shard[name] for shard in shards]) for name in LOGIT_SPLITS
    })
    merged.save_to_disk(logits_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", nargs="+", required=True, help="the teacher_shard steps' logits folders")
    parser.add_argument("--teacher-logits", required=True, help="folder for the merged logits")
    args = parser.parse_args(argv)
    run(shard_dirs=args.shards, logits_dir=args.teacher_logits)


if __name__ == "__main__":
    main()
