"""The teacher_eval step: the teacher's test metrics, and its logits on the training data, computed once.

Run as a KFP component (component.py) or directly, with every setting of settings.py given (`--help` lists them;
their defaults are the pipeline's parameters):

    python -m kdflow.components.teacher_eval.task --data DATA_DIR --teacher-logits LOGITS_DIR \
        --teacher-metrics teacher_metrics.json --teacher-confusion teacher_confusion.json \
        --teacher TEACHER_URI --cache-logits true --precision auto
"""

import sys
from pathlib import Path

from kdflow.components.common import models, step
from kdflow.components.common.data import load_prepared
from kdflow.components.common.inference import (
    INFERENCE_BATCH_SIZE, evaluate_on_test, footprint, latencies_ms, teacher_logits, torch_runner,
)
from kdflow.components.common.results import Evaluation, Scores

from .settings import Files, Result, Settings  # noqa: F401 (Result: the step's interface)

NOT_HERE = "README.txt"  # what the logits folder holds when teacher_shard steps compute the logits


def run(settings: Settings, files: Files) -> None:
    """Evaluates the teacher on the test split (teacher_metrics, teacher_confusion) and stores its logits on
    the splits distill reads (inference.logit_splits), row-aligned, in teacher_logits.

    Both run in `precision` (`auto`: bf16 where the GPU or CPU has bf16 kernels); its latency is measured in fp32,
    as the student's is, so that the two compare.

    The logits are a DatasetDict with one float column `teacher_logits` per split, in the splits' row order.
    Without `cache_logits` the teacher_shard steps compute the logits instead, and the logits folder holds only a
    note that says so (a cluster's launcher uploads every output folder, so it must exist).
    """
    data = load_prepared(files.data)
    model = models.load_classifier(settings.teacher, data.num_labels, fine_tuned=True)
    scores = evaluate_on_test(model, data.tokenizer, data, INFERENCE_BATCH_SIZE, settings.precision)
    scores.update(footprint(model, models.checkpoint_path(settings.teacher)),
                  latency_ms=latencies_ms(torch_runner(model), data.splits["test"], data.tokenizer))
    if settings.cache_logits:
        teacher_logits(model, data, INFERENCE_BATCH_SIZE, precision=settings.precision).save_to_disk(
            files.teacher_logits)
    else:
        Path(files.teacher_logits).mkdir(parents=True, exist_ok=True)
        Path(files.teacher_logits, NOT_HERE).write_text("teacher_shard steps computed the logits.\n")
    metrics = Evaluation(Scores.from_dict(scores), label_names=data.info["label_names"])
    metrics.write(files.teacher_metrics)
    metrics.write_confusion(files.teacher_confusion)


def main(argv: list[str] | None = None) -> None:
    step.main(sys.modules[__name__], argv)


if __name__ == "__main__":
    main()
